"""Parallel text: reading aligned files or a Hugging Face translation dataset, cleaning, tokenizing.

`FileCorpus` and `HFCorpus` offer the same two things: `pairs()` (an iterator of
`(source, target)` strings) and `fingerprint` (changes when the data changes, for
cache keys). `tokenize_corpus` turns either into token ids in one pass, chunk by
chunk, cleaning training data on the way, and writes them to one Arrow file.
"""

import gzip
import hashlib
import logging
import multiprocessing
import signal
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass
from itertools import chain, islice, zip_longest
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from seq2seq.download import fetch_hint
from seq2seq.errors import UserError
from seq2seq.textfiles import atomic_binary_output
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CHUNK_SIZE = 10_000


def resolve_corpus_file(prefix: str | Path, lang: str) -> Path:
    """Return `PREFIX.lang`, or `PREFIX.lang.gz` where the plain file is absent.

    Neither raises UserError; for a registered corpus's folder (`data/multi30k/`) its
    message gives the command that fetches the corpus.
    """
    plain = Path(f"{prefix}.{lang}")
    gzipped = Path(f"{plain}.gz")
    for path in (plain, gzipped):
        if path.is_file():
            return path
    raise UserError(f"corpus file not found: {plain} (nor {gzipped}){fetch_hint(plain)}")


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


@dataclass
class _Tally:
    """Pairs read, and dropped for each reason, over the chunks of a corpus."""

    pairs: int = 0
    blank: int = 0
    too_long: int = 0

    @property
    def kept(self) -> int:
        return self.pairs - self.blank - self.too_long

    def add(self, kept: int, blank: int, too_long: int) -> None:
        """Count one chunk's pairs: `kept`, and those dropped for each reason."""
        self.pairs += kept + blank + too_long
        self.blank, self.too_long = self.blank + blank, self.too_long + too_long


def _tokenized_chunk(
    chunk: list[tuple[str, str]], tokenizer: Tokenizer, max_len: int | None
) -> tuple[pa.RecordBatch, int, int]:
    """One chunk of pairs as a record batch of the output schema (without `index`), and
    how many pairs it dropped with a blank side and with more than `max_len` tokens."""
    src, tgt = map(list, zip(*chunk, strict=True))
    if max_len is None:
        columns = [src, tgt, tokenizer.encode_src(src), tokenizer.encode_tgt(tgt)]
        return pa.record_batch(columns, schema=_schema(with_text=True, with_index=False)), 0, 0
    nonblank = [(s, t) for s, t in zip(src, tgt, strict=True) if s.strip() and t.strip()]
    src_ids = tokenizer.encode_src([s for s, _ in nonblank])
    tgt_ids = tokenizer.encode_tgt([t for _, t in nonblank])
    within = [
        (s, t) for s, t in zip(src_ids, tgt_ids, strict=True) if max(len(s), len(t)) <= max_len
    ]
    columns = [[s for s, _ in within], [t for _, t in within]]
    batch = pa.record_batch(columns, schema=_schema(with_text=False, with_index=False))
    return batch, len(chunk) - len(nonblank), len(nonblank) - len(within)


def _schema(*, with_text: bool, with_index: bool) -> pa.Schema:
    """The tokenized corpus's columns: [src_text, tgt_text,] src_ids, tgt_ids[, index]."""
    ids = pa.list_(pa.int32())
    fields = [("src_text", pa.string()), ("tgt_text", pa.string())] if with_text else []
    fields += [("src_ids", ids), ("tgt_ids", ids)]
    return pa.schema(fields + ([("index", pa.int64())] if with_index else []))


def _tokenized_chunks(
    corpus: FileCorpus | HFCorpus, tokenizer: Tokenizer, max_len: int | None, num_proc: int
) -> Iterator[tuple[pa.RecordBatch, int, int]]:
    """`_tokenized_chunk` of each chunk of the corpus, in order. With `num_proc` > 1 and
    more than one chunk, worker processes (forked, as `datasets.map`'s are) tokenize
    while this process reads the corpus and writes: at most 2 chunks a worker in flight.
    A worker that dies (out of memory, say) is a UserError, never a hang."""
    chunks = _chunks(corpus.pairs(), CHUNK_SIZE)
    first_two = list(islice(chunks, 2))
    chunks = chain(first_two, chunks)
    if num_proc == 1 or len(first_two) < 2:
        yield from (_tokenized_chunk(chunk, tokenizer, max_len) for chunk in chunks)
        return
    setup = (tokenizer.to_dict(), max_len)
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(num_proc, context, initializer=_start_worker, initargs=setup)
    in_flight: deque[Future] = deque()
    try:
        for chunk in chunks:
            in_flight.append(pool.submit(_worker_chunk, chunk))
            if len(in_flight) >= 2 * num_proc:
                yield _result(in_flight.popleft())
        while in_flight:
            yield _result(in_flight.popleft())
    finally:
        pool.shutdown(cancel_futures=True)


def _result(future: Future) -> tuple[pa.RecordBatch, int, int]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise UserError(
            "a tokenizing worker process died (out of memory?): try a smaller data.num_proc"
        ) from None


_worker: dict = {}  # in a worker process: its tokenizer and max_len


def _start_worker(tokenizer_state: dict[str, bytes], max_len: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the pool
    _worker.update(tokenizer=Tokenizer.from_dict(tokenizer_state), max_len=max_len)


def _worker_chunk(chunk: list[tuple[str, str]]) -> tuple[pa.RecordBatch, int, int]:
    return _tokenized_chunk(chunk, _worker["tokenizer"], _worker["max_len"])


def tokenize_corpus(
    corpus: FileCorpus | HFCorpus,
    tokenizer: Tokenizer,
    path: Path,
    max_len: int | None = None,
    num_proc: int = 1,
) -> datasets.Dataset:
    """Write the corpus's `src_ids`, `tgt_ids` (no BOS/EOS) and `index` to the Arrow file
    `path`, one chunk of pairs at a time (memory stays flat with the corpus size; the
    file appears only when complete); return it memory-mapped.

    With `max_len` (training data), pairs with a blank side or more than `max_len`
    tokens on a side are dropped (each count is logged), and so are the text columns.
    Without it every pair stays, empty lines included, with its `src_text` and
    `tgt_text`. A corpus left empty raises UserError.
    """
    tally = _Tally()
    schema = _schema(with_text=max_len is None, with_index=True)
    with (
        atomic_binary_output(str(path)) as sink,
        pa.ipc.new_stream(sink, schema) as writer,
        closing(_tokenized_chunks(corpus, tokenizer, max_len, num_proc)) as chunks,
        tqdm(desc="tokenizing", unit=" pairs", unit_scale=True, mininterval=2) as bar,
    ):
        for batch, blank, too_long in chunks:
            index = pa.array(np.arange(tally.kept, tally.kept + batch.num_rows, dtype=np.int64))
            writer.write_batch(pa.record_batch([*batch.columns, index], schema=schema))
            tally.add(batch.num_rows, blank, too_long)
            bar.update(batch.num_rows + blank + too_long)
        _check_kept(corpus, tally, max_len)  # before the file is renamed into place
    return datasets.Dataset.from_file(str(path))


def _check_kept(corpus: FileCorpus | HFCorpus, tally: _Tally, max_len: int | None) -> None:
    """Log the pairs dropped for each reason; UserError where none is left."""
    if tally.pairs == 0:
        raise UserError(f"corpus {corpus} is empty")
    if max_len is None:
        return
    left = tally.pairs
    for dropped, reason in [
        (tally.blank, "a blank side"),
        (tally.too_long, f"more than {max_len} tokens"),
    ]:
        log.info("dropped %d of %d pairs with %s from %s", dropped, left, reason, corpus)
        left -= dropped
        if left == 0:
            raise UserError(f"corpus {corpus} is empty after dropping pairs with {reason}")
