"""The bundled demo corpus: German number words to English, generated offline.

"einundzwanzigtausendvierhundertzwölf" -> "twenty-one thousand, four hundred and
twelve" needs real reordering (units before tens in German) and splitting of
long compound words, so a model that scores well on it has learned something.
"""

import random
from pathlib import Path

from num2words import num2words

SPLITS = {"train": 12000, "val": 400, "test": 400}
MAX_DIGITS = 6
VERSION = "2"  # of the sampling below: a corpus written by another version is rewritten
STAMP = ".demo-corpus-version"


def sample_numbers(count: int, rng: random.Random) -> list[int]:
    """`count` distinct numbers in random order, each of a digit count (1 to 6) drawn
    uniformly; a digit count whose numbers are all taken is drawn again."""
    numbers: list[int] = []
    seen: set[int] = set()
    while len(numbers) < count:
        digits = rng.randint(1, MAX_DIGITS)
        n = rng.randint(10 ** (digits - 1), 10**digits - 1)
        if n not in seen:
            seen.add(n)
            numbers.append(n)
    rng.shuffle(numbers)
    return numbers


def split_numbers(sizes: dict[str, int], seed: int) -> dict[str, list[int]]:
    """Each split's numbers: consecutive parts of one shuffled sample."""
    numbers = sample_numbers(sum(sizes.values()), random.Random(seed))
    splits, start = {}, 0
    for split, size in sizes.items():
        splits[split] = numbers[start : start + size]
        start += size
    return splits


def write_demo_corpus(
    out_dir: str | Path, seed: int = 1, sizes: dict[str, int] | None = None
) -> Path:
    """Write `{train,val,test}.{de,en}` under `out_dir`; returns `out_dir`.

    The splits are a random partition of one sample, so train, val and test follow the
    same distribution and share no number. (Sampling each held-out split first would
    take most of the 999 numbers below 1,000 away from training.) A corpus already
    written by this version with this seed and these sizes is left alone.
    """
    out = Path(out_dir)
    sizes = sizes or SPLITS
    stamp, written_by = out / STAMP, f"{VERSION} seed={seed} sizes={sorted(sizes.items())}"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == written_by:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for split, part in split_numbers(sizes, seed).items():
        for lang in ("de", "en"):
            lines = "".join(num2words(n, lang=lang) + "\n" for n in part)
            tmp = out / f".{split}.{lang}.tmp"
            tmp.write_text(lines, encoding="utf-8")
            tmp.replace(out / f"{split}.{lang}")
    stamp.write_text(written_by, encoding="utf-8")
    return out
