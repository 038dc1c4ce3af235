"""Reading parallel text: files, gzip, errors, Hugging Face datasets, cleaning."""

import gzip
import logging
import multiprocessing
import os
import re
from pathlib import Path

import datasets
import pytest

from seq2seq.corpus import (
    FileCorpus,
    HFCorpus,
    file_fingerprint,
    load_hf_translation,
    read_lines,
    read_parallel,
    resolve_corpus_file,
    tokenize_corpus,
)
from seq2seq.errors import UserError
from seq2seq.tokenizer import Tokenizer

RAW = "eins zwei \r\n  drei\u2028vier  \n\nlast".encode()
LINES = ["eins zwei ", "  drei\u2028vier  ", "", "last"]


def write_pair(prefix: Path, src: list[str], tgt: list[str]) -> FileCorpus:
    Path(f"{prefix}.de").write_text("".join(f"{s}\n" for s in src), encoding="utf-8")
    Path(f"{prefix}.en").write_text("".join(f"{t}\n" for t in tgt), encoding="utf-8")
    return FileCorpus.from_prefix(prefix, "de", "en")


def test_read_lines_plain_and_gzip_alike(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(RAW)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(RAW))
    assert list(read_lines(tmp_path / "a.txt")) == LINES
    assert list(read_lines(tmp_path / "a.txt.gz")) == LINES


def test_resolve_corpus_file_prefers_plain_then_gzip(tmp_path: Path) -> None:
    (tmp_path / "train.de.gz").write_bytes(gzip.compress(b"x\n"))
    assert resolve_corpus_file(tmp_path / "train", "de") == tmp_path / "train.de.gz"
    (tmp_path / "train.de").write_text("x\n")
    assert resolve_corpus_file(str(tmp_path / "train"), "de") == tmp_path / "train.de"


def test_missing_file_names_both_candidates(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found") as error:
        resolve_corpus_file(tmp_path / "nope", "en")
    assert str(tmp_path / "nope.en") in str(error.value)
    assert str(tmp_path / "nope.en.gz") in str(error.value)


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.de"
    path.write_bytes(b"gut\nauch gut\nschlecht \xff\xfe\n")
    with pytest.raises(UserError, match="invalid UTF-8") as error:
        list(read_lines(path))
    assert f"{path}:3:" in str(error.value)


@pytest.mark.parametrize("content", [b"not gzip at all\n", gzip.compress(b"abc\n" * 100)[:-10]])
def test_corrupt_gzip_names_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.en.gz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(str(path))):
        list(read_lines(path))


def test_read_parallel_yields_aligned_pairs(tmp_path: Path) -> None:
    corpus = write_pair(tmp_path / "c", ["a", "", "c"], ["x", "y", ""])
    assert list(read_parallel(corpus.src_path, corpus.tgt_path)) == [
        ("a", "x"),
        ("", "y"),
        ("c", ""),
    ]


@pytest.mark.parametrize(("n_src", "n_tgt"), [(3, 5), (5, 3)])
def test_length_mismatch_names_both_files_and_counts(
    tmp_path: Path, n_src: int, n_tgt: int
) -> None:
    corpus = write_pair(tmp_path / "c", ["s"] * n_src, ["t"] * n_tgt)
    with pytest.raises(UserError) as error:
        list(corpus.pairs())
    message = str(error.value)
    assert f"{corpus.src_path} has {n_src} lines" in message
    assert f"{corpus.tgt_path} has {n_tgt} lines" in message


def test_file_fingerprint_changes_with_content(tmp_path: Path) -> None:
    path = tmp_path / "f.de"
    path.write_text("a\n")
    before = file_fingerprint(path)
    assert file_fingerprint(path) == before
    path.write_text("ab\n")
    os.utime(path, ns=(1, 1))
    assert file_fingerprint(path) != before


@pytest.fixture
def saved_dataset(tmp_path: Path) -> Path:
    """A DatasetDict with `translation` dicts, saved to disk."""
    rows = {
        "train": [("eins", "one"), ("zwei", "two"), ("drei", "three")],
        "validation": [("vier", "four")],
    }
    splits = {
        name: datasets.Dataset.from_dict(
            {
                "translation": [{"de": de, "en": en, "fr": "?"} for de, en in pairs],
                "id": [0] * len(pairs),
            }
        )
        for name, pairs in rows.items()
    }
    path = tmp_path / "hf"
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def test_load_hf_translation_from_disk(saved_dataset: Path) -> None:
    data, fingerprint = load_hf_translation(str(saved_dataset), "train", "de", "en")
    assert data.column_names == ["src_text", "tgt_text"]
    assert data["src_text"][:] == ["eins", "zwei", "drei"]
    assert data["tgt_text"][:] == ["one", "two", "three"]
    corpus = HFCorpus.load(str(saved_dataset), "validation", "de", "en", None)
    assert list(corpus.pairs()) == [("vier", "four")]
    reverse, reverse_fingerprint = load_hf_translation(str(saved_dataset), "train", "en", "de")
    assert reverse["src_text"][0] == "one"
    assert len({fingerprint, reverse_fingerprint}) == 2
    assert load_hf_translation(str(saved_dataset), "train", "de", "en")[1] == fingerprint
    changed = datasets.Dataset.from_dict({"translation": [{"de": "fünf", "en": "five"}]})
    datasets.DatasetDict({"train": changed}).save_to_disk(str(saved_dataset))
    assert load_hf_translation(str(saved_dataset), "train", "de", "en")[1] != fingerprint


@pytest.mark.parametrize(
    ("split", "langs", "match"),
    [("test", ("de", "en"), "no split 'test'"), ("train", ("de", "it"), "no language 'it'")],
)
def test_load_hf_translation_missing_parts(
    saved_dataset: Path, split: str, langs: tuple[str, str], match: str
) -> None:
    with pytest.raises(UserError, match=match) as error:
        load_hf_translation(str(saved_dataset), split, *langs)
    assert str(saved_dataset) in str(error.value)


def test_load_hf_translation_needs_translation_column(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(UserError, match="no 'translation' column"):
        load_hf_translation(str(tmp_path / "plain"), "train", "de", "en")


@pytest.fixture(scope="module")
def tokenizer(tiny_corpus: Path) -> Tokenizer:
    corpus = FileCorpus.from_prefix(tiny_corpus / "train", "de", "en")
    pairs = list(corpus.pairs())
    return Tokenizer.train(
        [s for s, _ in pairs], [t for _, t in pairs], vocab_size=60, model_type="bpe"
    )


def test_tokenize_corpus_cleans_only_with_max_len(
    tmp_path: Path, tokenizer: Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    long = " ".join(["siebenhundert"] * 30)
    src = ["eins", "", "zwei", long, "drei"]
    tgt = ["one", "nothing", " ", "seven", "three"]
    corpus = write_pair(tmp_path / "c", src, tgt)

    kept = tokenize_corpus(corpus, tokenizer, tmp_path / "kept.arrow")
    assert kept.column_names == ["src_text", "tgt_text", "src_ids", "tgt_ids", "index"]
    assert kept["src_text"][:] == src
    assert kept["src_ids"][1] == []
    assert kept["index"][:] == list(range(5))

    caplog.set_level(logging.INFO, logger="seq2seq")
    cleaned = tokenize_corpus(corpus, tokenizer, tmp_path / "cleaned.arrow", max_len=20)
    assert cleaned.column_names == ["src_ids", "tgt_ids", "index"]
    assert cleaned["src_ids"][:] == tokenizer.encode_src(["eins", "drei"])
    assert cleaned["index"][:] == [0, 1]
    assert "dropped 2 of 5 pairs with a blank side" in caplog.text
    assert "dropped 1 of 3 pairs with more than 20 tokens" in caplog.text


@pytest.mark.parametrize("num_proc", [1, 2])
def test_tokenize_corpus_in_chunks_equals_one_chunk(
    tmp_path: Path,
    tokenizer: Tokenizer,
    num_proc: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Chunks of 3 pairs, in one process or two, give what one chunk gives: the same ids
    in order, `index` counting the kept pairs across chunks, drops counted in all."""
    src = ["eins", "", "zwei drei", " ".join(["vier"] * 30), "fünf", "sechs", "", "sieben"]
    tgt = ["one", "x", "two three", "four", "", "six", "y", "seven"]
    corpus = write_pair(tmp_path / "c", src, tgt)
    whole = tokenize_corpus(corpus, tokenizer, tmp_path / "whole.arrow", max_len=20)
    caplog.set_level(logging.INFO, logger="seq2seq")
    monkeypatch.setattr("seq2seq.corpus.CHUNK_SIZE", 3)
    chunked = tokenize_corpus(corpus, tokenizer, tmp_path / "chunked.arrow", 20, num_proc)
    assert chunked["src_ids"][:] == whole["src_ids"][:]
    assert chunked["src_ids"][:] == tokenizer.encode_src(["eins", "zwei drei", "sechs", "sieben"])
    assert chunked["tgt_ids"][:] == tokenizer.encode_tgt(["one", "two three", "six", "seven"])
    assert chunked["index"][:] == [0, 1, 2, 3]
    assert "dropped 3 of 8 pairs with a blank side" in caplog.text
    assert "dropped 1 of 5 pairs with more than 20 tokens" in caplog.text


def test_tokenize_corpus_in_two_processes_keeps_every_pair_and_its_text(
    tmp_path: Path, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = ["eins", "", "zwei drei", "vier", "fünf"]
    tgt = ["one", "", "two three", "", "five"]
    corpus = write_pair(tmp_path / "c", src, tgt)
    monkeypatch.setattr("seq2seq.corpus.CHUNK_SIZE", 2)
    data = tokenize_corpus(corpus, tokenizer, tmp_path / "two.arrow", num_proc=2)
    assert data["src_text"][:] == src and data["tgt_text"][:] == tgt
    assert data["tgt_ids"][:] == tokenizer.encode_tgt(tgt)
    assert data["index"][:] == list(range(5))


def test_a_bad_line_mid_corpus_stops_the_workers_and_writes_nothing(
    tmp_path: Path, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_pair(tmp_path / "c", ["eins"] * 7, ["one"] * 7)
    with open(corpus.src_path, "ab") as f:
        f.write(b"zwei \xff\n")
    with open(corpus.tgt_path, "a", encoding="utf-8") as f:
        f.write("two\n")
    monkeypatch.setattr("seq2seq.corpus.CHUNK_SIZE", 2)
    with pytest.raises(UserError, match=rf"{re.escape(str(corpus.src_path))}:8: invalid UTF-8"):
        tokenize_corpus(corpus, tokenizer, tmp_path / "out.arrow", 20, num_proc=2)
    assert list(tmp_path.glob("*.arrow*")) == [] and list(tmp_path.glob(".out.arrow*")) == []
    assert multiprocessing.active_children() == []


def _die(chunk: list[tuple[str, str]]) -> None:
    os._exit(1)


def test_a_worker_that_dies_is_an_error_not_a_hang(
    tmp_path: Path, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_pair(tmp_path / "c", ["eins"] * 6, ["one"] * 6)
    monkeypatch.setattr("seq2seq.corpus.CHUNK_SIZE", 2)
    monkeypatch.setattr("seq2seq.corpus._worker_chunk", _die)  # the forked workers see it
    with pytest.raises(UserError, match="worker process died"):
        tokenize_corpus(corpus, tokenizer, tmp_path / "out.arrow", num_proc=2)
    assert not (tmp_path / "out.arrow").exists()


def test_tokenize_corpus_refuses_an_empty_corpus(tmp_path: Path, tokenizer: Tokenizer) -> None:
    corpus = write_pair(tmp_path / "c", [], [])
    with pytest.raises(UserError, match=r"c\.de \+ .*c\.en is empty$"):
        tokenize_corpus(corpus, tokenizer, tmp_path / "out.arrow")


def test_load_hf_translation_feature(tmp_path: Path) -> None:
    features = datasets.Features({"translation": datasets.Translation(languages=["de", "en"])})
    rows = {"translation": [{"de": "eins", "en": "one"}]}
    data = datasets.Dataset.from_dict(rows, features=features, split="validation")
    data.save_to_disk(str(tmp_path / "single"))
    loaded, _ = load_hf_translation(str(tmp_path / "single"), "validation", "de", "en")
    assert list(zip(loaded["src_text"], loaded["tgt_text"], strict=True)) == [("eins", "one")]
    with pytest.raises(UserError, match="no split 'train'"):
        load_hf_translation(str(tmp_path / "single"), "train", "de", "en")
