"""Parallel text: reading aligned files or a Hugging Face translation dataset, cleaning, tokenizing.

`FileCorpus` and `HFCorpus` offer the same three things: `pairs()` (an
iterator of `(source, target)` strings), `fingerprint` (changes when the data
changes, for cache keys) and `to_dataset(path)` (a `datasets.Dataset` with
string columns `src_text` and `tgt_text`). `tokenize_corpus` turns either into
token ids, cleaning training data on the way.
"""

import gzip
import hashlib
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice, zip_longest
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from seq2seq.errors import UserError
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)

TEXT_SCHEMA = pa.schema([("src_text", pa.string()), ("tgt_text", pa.string())])
IDS = datasets.List(datasets.Value("int32"))
CHUNK_SIZE = 10_000


def resolve_corpus_file(prefix: str | Path, lang: str) -> Path:
    """Return `PREFIX.lang`, or `PREFIX.lang.gz` where the plain file is absent."""
    plain = Path(f"{prefix}.{lang}")
    gzipped = Path(f"{plain}.gz")
    for path in (plain, gzipped):
        if path.is_file():
            return path
    raise UserError(f"corpus file not found: {plain} (nor {gzipped})")


def read_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a UTF-8 file, gzipped when its name ends in `.gz`, without newlines.

    Lines end at "\\n" only (a trailing "\\r" is dropped too), so Unicode line
    separators inside a sentence cannot break the alignment of parallel files.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as lines:
            for lineno, line in enumerate(lines, 1):
                yield _decode(line, path, lineno)
    except FileNotFoundError:
        raise UserError(f"corpus file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot read ({e})") from None


def _decode(line: bytes, path: Path, lineno: int) -> str:
    """One line as text, without its "\\n" or "\\r\\n"."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}:{lineno}: invalid UTF-8 at byte {e.start}") from None
    return text.removesuffix("\n").removesuffix("\r")


def read_parallel(src_path: Path, tgt_path: Path) -> Iterator[tuple[str, str]]:
    """Yield aligned `(source, target)` lines; unequal line counts raise UserError."""
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
    for count, (src, tgt) in enumerate(zip_longest(src_lines, tgt_lines), 1):
        if src is None or tgt is None:
            longer = src_lines if tgt is None else tgt_lines
            total = count + sum(1 for _ in longer)
            n_src, n_tgt = (total, count - 1) if tgt is None else (count - 1, total)
            raise UserError(
                f"parallel files differ in length: {src_path} has {n_src} lines, "
                f"{tgt_path} has {n_tgt} lines"
            )
        yield src, tgt


def file_fingerprint(*paths: Path) -> str:
    """A short hex digest of each file's resolved path, size and modification time."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_hf_translation(
    name_or_path: str, split: str, src_lang: str, tgt_lang: str, config: str | None = None
) -> tuple[datasets.Dataset, str]:
    """Load one split of a translation dataset as string columns `src_text`, `tgt_text`.

    A directory written by `save_to_disk` is read with `load_from_disk`, anything
    else with `datasets.load_dataset(name_or_path, config, split=split)`. The
    dataset needs a `translation` column of `{lang: text}` dicts. Returns the
    dataset and a fingerprint of its content, split and languages.
    """
    data = _load_split(name_or_path, split, config)
    what = f"dataset {name_or_path!r} split {split!r}"
    if "translation" not in data.column_names:
        raise UserError(f"{what} has no 'translation' column (columns: {data.column_names})")
    languages = _languages(data.features["translation"])
    for lang in (src_lang, tgt_lang):
        if lang not in languages:
            raise UserError(f"{what} has no language {lang!r} (languages: {languages})")
    # Flattening the struct column is zero-copy and writes no cache files.
    pairs = data.select_columns("translation").flatten()
    pairs = pairs.rename_columns(
        {f"translation.{src_lang}": "src_text", f"translation.{tgt_lang}": "tgt_text"}
    ).select_columns(["src_text", "tgt_text"])
    # The Arrow files that load_from_disk / load_dataset memory-map (path, size, mtime).
    files = file_fingerprint(*(Path(cache["filename"]) for cache in data.cache_files))
    key = f"{files}\0{len(data)}\0{split}\0{src_lang}\0{tgt_lang}"
    return pairs, hashlib.sha256(key.encode()).hexdigest()[:16]


def _languages(feature: object) -> list[str]:
    """The language keys of a `translation` feature: a `Translation` or a dict of strings."""
    if isinstance(feature, datasets.Translation):
        return list(feature.languages)
    return list(feature) if isinstance(feature, dict) else []


def _load_split(name_or_path: str, split: str, config: str | None) -> datasets.Dataset:
    """One split of a dataset saved to disk or loadable by `datasets.load_dataset`."""
    path = Path(name_or_path)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        saved = datasets.load_from_disk(str(path))
        if isinstance(saved, datasets.Dataset):
            # A single saved Dataset is one split: its own, or "train" if unnamed.
            saved = datasets.DatasetDict({str(saved.split or "train"): saved})
        if split not in saved:
            raise UserError(f"dataset {name_or_path!r} has no split {split!r} (has {list(saved)})")
        return saved[split]
    try:
        return datasets.load_dataset(name_or_path, config, split=split)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
        raise UserError(f"cannot load dataset {name_or_path!r} split {split!r}: {e}") from None


def _chunks(pairs: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    """Consecutive lists of at most `size` pairs."""
    iterator = iter(pairs)
    while chunk := list(islice(iterator, size)):
        yield chunk


@dataclass(frozen=True)
class FileCorpus:
    """Two aligned text files, `PREFIX.src_lang[.gz]` and `PREFIX.tgt_lang[.gz]`."""

    src_path: Path
    tgt_path: Path

    @classmethod
    def from_prefix(cls, prefix: str | Path, src_lang: str, tgt_lang: str) -> "FileCorpus":
        """Find both files of `prefix`; a missing one raises UserError."""
        return cls(resolve_corpus_file(prefix, src_lang), resolve_corpus_file(prefix, tgt_lang))

    def __str__(self) -> str:
        return f"{self.src_path} + {self.tgt_path}"

    @property
    def fingerprint(self) -> str:
        """Changes when either file is replaced or modified."""
        return file_fingerprint(self.src_path, self.tgt_path)

    def pairs(self) -> Iterator[tuple[str, str]]:
        """The aligned lines."""
        return read_parallel(self.src_path, self.tgt_path)

    def to_dataset(self, path: Path) -> datasets.Dataset:
        """Write the pairs to the Arrow file `path` chunk by chunk; return it memory-mapped."""
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, TEXT_SCHEMA) as writer:
            for chunk in _chunks(self.pairs(), CHUNK_SIZE):
                src, tgt = zip(*chunk, strict=True)
                writer.write_batch(pa.record_batch([list(src), list(tgt)], schema=TEXT_SCHEMA))
        return datasets.Dataset.from_file(str(path))


@dataclass(frozen=True)
class HFCorpus:
    """One split of a Hugging Face translation dataset (see `load_hf_translation`)."""

    dataset: datasets.Dataset
    fingerprint: str
    name: str

    @classmethod
    def load(
        cls, name_or_path: str, split: str, src_lang: str, tgt_lang: str, config: str | None
    ) -> "HFCorpus":
        """Load `split` of the dataset `name_or_path`."""
        data, fingerprint = load_hf_translation(name_or_path, split, src_lang, tgt_lang, config)
        return cls(data, fingerprint, f"dataset {name_or_path!r} split {split!r}")

    def __str__(self) -> str:
        return self.name

    def pairs(self) -> Iterator[tuple[str, str]]:
        """The translation pairs, read in chunks."""
        for batch in self.dataset.iter(batch_size=CHUNK_SIZE):
            yield from zip(batch["src_text"], batch["tgt_text"], strict=True)

    def to_dataset(self, path: Path) -> datasets.Dataset:
        """The dataset itself; `path` is unused, as nothing needs writing."""
        return self.dataset


def _tokenize(batch: dict[str, list], tokenizer: Tokenizer) -> dict[str, list]:
    return {
        "src_ids": tokenizer.encode_src(batch["src_text"]),
        "tgt_ids": tokenizer.encode_tgt(batch["tgt_text"]),
    }


def _both_nonblank(src: list[str], tgt: list[str]) -> list[bool]:
    return [bool(s.strip() and t.strip()) for s, t in zip(src, tgt, strict=True)]


def _both_within(src: list[list[int]], tgt: list[list[int]], max_len: int) -> list[bool]:
    return [len(s) <= max_len and len(t) <= max_len for s, t in zip(src, tgt, strict=True)]


def _drop(
    data: datasets.Dataset,
    keep: Callable[..., list[bool]],
    columns: list[str],
    reason: str,
    corpus: FileCorpus | HFCorpus,
    cache_file: Path,
    num_proc: int,
) -> datasets.Dataset:
    """Keep the pairs that `keep(*columns)` accepts; log how many went; none left: UserError."""
    kept = data.filter(
        keep,
        input_columns=columns,
        batched=True,
        num_proc=num_proc,
        cache_file_name=str(cache_file),
        desc=f"dropping pairs with {reason}",
    )
    log.info(
        "dropped %d of %d pairs with %s from %s", len(data) - len(kept), len(data), reason, corpus
    )
    if len(kept) == 0:
        raise UserError(f"corpus {corpus} is empty after dropping pairs with {reason}")
    return kept


def tokenize_corpus(
    corpus: FileCorpus | HFCorpus,
    tokenizer: Tokenizer,
    work: Path,
    max_len: int | None = None,
    num_proc: int = 1,
) -> datasets.Dataset:
    """The corpus as a dataset of `src_ids`, `tgt_ids` (no BOS/EOS) and `index`.

    With `max_len` (training data), pairs with a blank side or more than
    `max_len` tokens on a side are dropped and the text columns too. Without it
    every pair stays, empty lines included, with its `src_text` and `tgt_text`.
    Intermediate Arrow files go to the folder `work`.
    """
    data = corpus.to_dataset(work / "text.arrow")
    if len(data) == 0:
        raise UserError(f"corpus {corpus} is empty")
    if max_len is not None:
        text = ["src_text", "tgt_text"]
        data = _drop(data, _both_nonblank, text, "a blank side", corpus, work / "a.arrow", num_proc)
    data = data.map(
        _tokenize,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer},
        features=datasets.Features({**data.features, "src_ids": IDS, "tgt_ids": IDS}),
        num_proc=num_proc,
        cache_file_name=str(work / "ids.arrow"),
        desc="tokenizing",
    )
    if max_len is not None:
        within, ids = partial(_both_within, max_len=max_len), ["src_ids", "tgt_ids"]
        reason = f"more than {max_len} tokens"
        data = _drop(data, within, ids, reason, corpus, work / "b.arrow", num_proc)
        data = data.remove_columns(["src_text", "tgt_text"])
    return data.add_column("index", np.arange(len(data)))
