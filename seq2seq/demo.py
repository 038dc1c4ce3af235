"""The bundled demo corpus: German number words to English, generated offline.

"einundzwanzigtausendvierhundertzwölf" -> "twenty-one thousand, four hundred and
twelve" needs real reordering (units before tens in German) and splitting of
long compound words, so a model that scores well on it has learned something.
"""

import random
from pathlib import Path

from num2words import num2words

SPLITS = {"train": 12000, "val": 400, "test": 400}
MAX_NUMBER = 999_999


def sample_numbers(count: int, rng: random.Random, exclude: set[int]) -> list[int]:
    """Draw distinct numbers, evenly spread over 1 to 6 digits, avoiding `exclude`."""
    numbers: list[int] = []
    seen = set(exclude)
    while len(numbers) < count:
        digits = rng.randint(1, len(str(MAX_NUMBER)))
        n = rng.randint(10 ** (digits - 1), 10**digits - 1)
        if n not in seen:
            seen.add(n)
            numbers.append(n)
    return numbers


def write_demo_corpus(
    out_dir: str | Path, seed: int = 1, sizes: dict[str, int] | None = None
) -> Path:
    """Write `{train,val,test}.{de,en}` under `out_dir`; held-out numbers never appear in train.

    Returns `out_dir`. Splits that already exist are left alone.
    """
    out = Path(out_dir)
    sizes = sizes or SPLITS
    if all((out / f"{split}.en").exists() for split in sizes):
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    used: set[int] = set()
    for split in ("test", "val", "train"):  # held-out sets first, so train avoids them
        if split not in sizes:
            continue
        numbers = sample_numbers(sizes[split], rng, used)
        used.update(numbers)
        for lang in ("de", "en"):
            lines = "".join(num2words(n, lang=lang) + "\n" for n in numbers)
            tmp = out / f".{split}.{lang}.tmp"
            tmp.write_text(lines, encoding="utf-8")
            tmp.replace(out / f"{split}.{lang}")
    return out
