"""Lexical shortlists: IBM Model 1 against a plain-Python EM, a known dictionary recovered,
each sentence's allowed set as a union computed by hand, saving and loading, shortlist.py."""

import gzip
import logging
import random
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from seq2seq.cli.shortlist import main as shortlist_main
from seq2seq.errors import UserError
from seq2seq.shortlist import Shortlist, build_shortlist, ibm1_table
from seq2seq.tokenizer import EOS_ID, UNK_ID, Tokenizer

NULL = "NULL"
FUNCTION_WORD = 30


def reference_ibm1(
    pairs: list[tuple[list[int], list[int]]], tgt_vocab_size: int, iterations: int
) -> dict[object, dict[int, float]]:
    """t[f][e] by IBM Model 1's EM as the textbook loops write it, NULL a source word."""
    t: dict[object, dict[int, float]] = defaultdict(lambda: defaultdict(lambda: 1 / tgt_vocab_size))
    for _ in range(iterations):
        count: dict[object, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for src, tgt in pairs:
            for e in tgt:
                norm = sum(t[f][e] for f in [NULL, *src])
                for f in [NULL, *src]:
                    count[f][e] += t[f][e] / norm
        t = defaultdict(dict)
        for f, row in count.items():
            total = sum(row.values())
            t[f] = {e: c / total for e, c in row.items()}
    return t


def test_ibm1_table_is_the_textbook_em() -> None:
    pairs = [([0, 1], [3, 4]), ([0, 2, 2], [3, 5, 1]), ([1], [4]), ([2, 5, 0], [5, 3]), ([4], [])]
    pairs += [([], [2, 2]), ([5, 3, 1], [0, 4, 4, 1])]
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    src, tgt, prob = ibm1_table(sources, targets, 6, 6, iterations=3)
    expected = reference_ibm1(pairs, tgt_vocab_size=6, iterations=3)
    triples = zip(src.tolist(), tgt.tolist(), prob.tolist(), strict=True)
    found = {(NULL if f == 6 else f, e): p for f, e, p in triples}
    pairs_expected = {(f, e): p for f, row in expected.items() for e, p in row.items()}
    assert found.keys() == pairs_expected.keys()
    for key, p in found.items():
        assert p == pytest.approx(pairs_expected[key], rel=1e-12), key
    assert src.tolist() == sorted(src.tolist())  # sorted by (source, target)


def dictionary_corpus(sentences: int, offset: int) -> tuple[list[list[int]], list[list[int]]]:
    """Source words 4..23 translate to word + `offset`, in shuffled order; every target also
    holds `FUNCTION_WORD`, which no source word stands for: it meets each source word as
    often as that word's translation, so counting alone ties them (and its lower id would
    win)."""
    rng = random.Random(0)
    sources, targets = [], []
    for _ in range(sentences):
        words = rng.sample(range(4, 24), rng.randint(1, 8))
        target = [w + offset for w in words] + [FUNCTION_WORD]
        rng.shuffle(target)
        sources.append(words)
        targets.append(target)
    return sources, targets


def test_a_known_dictionary_is_each_source_words_first_candidate() -> None:
    sources, targets = dictionary_corpus(300, offset=50)
    shortlist = build_shortlist(sources, targets, 30, 100, k=4, n=3, fingerprint="f")
    assert shortlist.candidates.shape == (30, 4)
    assert shortlist.candidates[4:24, 0].tolist() == [w + 50 for w in range(4, 24)]
    unseen = [*range(4), *range(24, 30)]
    assert (shortlist.candidates[unseen] == -1).all()
    assert shortlist.frequent.tolist()[:3] == [UNK_ID, EOS_ID, FUNCTION_WORD]


def test_candidates_rank_by_probability_then_lower_id() -> None:
    """Source 1 meets targets 7 and 5 always together: equal t, so 5 before 7; 2 is likelier."""
    sources, targets = [[1], [1], [1]], [[7, 5, 2], [2, 7, 5], [2]]
    shortlist = build_shortlist(sources, targets, 3, 8, k=4, n=0, fingerprint="f")
    assert shortlist.candidates[1].tolist() == [2, 5, 7, -1]
    assert shortlist.frequent.tolist() == [UNK_ID, EOS_ID]


def test_frequent_counts_ties_by_lower_id() -> None:
    targets = [[6, 6, 5, 4], [4, 7, 3, 1], [5]]  # 4, 5, 6 twice; UNK (1) and EOS (3) first
    shortlist = build_shortlist([[0]] * 3, targets, 1, 8, k=1, n=2, fingerprint="f")
    assert shortlist.frequent.tolist() == [UNK_ID, EOS_ID, 4, 5]


@pytest.mark.parametrize(
    ("setting", "value", "least"), [("k", 0, 1), ("n", -1, 0), ("iterations", 0, 1)]
)
def test_settings_out_of_range_are_refused(setting: str, value: int, least: int) -> None:
    settings = {"k": 1, "n": 0, "iterations": 1, setting: value}
    with pytest.raises(UserError, match=f"{setting} must be at least {least}, got {value}"):
        build_shortlist([[0]], [[0]], 1, 1, fingerprint="f", **settings)


@pytest.fixture
def table() -> Shortlist:
    """Pad id 0 has candidates too, so padding that counted would show."""
    candidates = torch.tensor([[9, 8], [1, -1], [2, 3], [-1, -1], [4, 2], [7, 11]])
    return Shortlist(candidates, torch.tensor([0, 5]), "f", tgt_vocab_size=12)


def test_allowed_is_the_union_of_the_sentences_own_candidates(table: Shortlist) -> None:
    sentences = [[2, 4], [3], [5, 1, 2, 2], []]
    src = torch.tensor([s + [0] * (4 - len(s)) for s in sentences])  # (B, S) padded with 0
    lengths = torch.tensor([len(s) for s in sentences])
    mask = table.allowed(src, lengths)
    assert mask.shape == (4, 12) and mask.dtype == torch.bool
    for row, sentence in zip(mask, sentences, strict=True):
        expected = {0, 5} | {c for w in sentence for c in table.candidates[w].tolist() if c >= 0}
        assert set(row.nonzero().flatten().tolist()) == expected
    for i, sentence in enumerate(sentences):
        alone = table.allowed(torch.tensor([sentence], dtype=torch.long), lengths[i : i + 1])
        assert torch.equal(alone[0], mask[i])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_allowed_on_cuda_is_allowed_on_cpu(table: Shortlist) -> None:
    src, lengths = torch.tensor([[2, 4, 0], [5, 1, 3]]), torch.tensor([2, 3])
    on_gpu = table.allowed(src.cuda(), lengths.cuda())
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), table.allowed(src, lengths))


def test_save_and_load_round_trip(table: Shortlist, tmp_path: Path) -> None:
    table.save(str(tmp_path / "lex.pt"))
    loaded = Shortlist.load(tmp_path / "lex.pt")
    assert torch.equal(loaded.candidates, table.candidates)
    assert torch.equal(loaded.frequent, table.frequent)
    assert (loaded.fingerprint, loaded.tgt_vocab_size) == ("f", 12)
    assert [p.name for p in tmp_path.iterdir()] == ["lex.pt"]  # no temporary file left


def one_line_error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        Shortlist.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_load_refuses_what_is_not_a_shortlist(tmp_path: Path) -> None:
    assert "shortlist not found" in one_line_error(tmp_path / "missing.pt")
    torch.save({"hyper_parameters": {}, "state_dict": {}}, tmp_path / "model.ckpt")
    assert "not a shortlist file" in one_line_error(tmp_path / "model.ckpt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 4)
    assert "not a shortlist file" in one_line_error(tmp_path / "noise.pt")


def test_load_refuses_another_format_version(table: Shortlist, tmp_path: Path) -> None:
    table.save(str(tmp_path / "lex.pt"))
    state = torch.load(tmp_path / "lex.pt", weights_only=True)
    torch.save(state | {"version": 99}, tmp_path / "lex.pt")
    assert "format version 99" in one_line_error(tmp_path / "lex.pt")


def test_check_matches_names_the_file(table: Shortlist) -> None:
    table.check_matches("f", 12, origin="lex.pt")
    for fingerprint, size in (("g", 12), ("f", 13)):
        with pytest.raises(UserError, match=r"^lex\.pt was built for SentencePiece model\(s\) f"):
            table.check_matches(fingerprint, size, origin="lex.pt")


@pytest.fixture(scope="module")
def tokenizer(tiny_corpus: Path) -> Tokenizer:
    sides = [(tiny_corpus / f"train.{lang}").read_text().splitlines() for lang in ("de", "en")]
    return Tokenizer.train(iter(sides[0]), iter(sides[1]), vocab_size=60, joint=False)


@pytest.fixture(scope="module")
def checkpoint(tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with the keys `load_checkpoint` requires: shortlist.py reads only its
    SentencePiece models."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save({"hyper_parameters": {}, "state_dict": {}, "tokenizer": tokenizer.to_dict()}, path)
    return path


def test_shortlist_py_builds_for_the_checkpoints_models(
    checkpoint: Path,
    tokenizer: Tokenizer,
    tiny_corpus: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = {}
    for lang in ("de", "en"):  # gzipped, as ../shared holds Multi30k
        files[lang] = tmp_path / f"train.{lang}.gz"
        files[lang].write_bytes(gzip.compress((tiny_corpus / f"train.{lang}").read_bytes()))
    output = tmp_path / "lex.pt"
    common = ["--checkpoint", str(checkpoint), "--src", str(files["de"]), "--tgt"]
    with caplog.at_level(logging.INFO):
        shortlist_main([*common, str(files["en"]), "--output", str(output), "-k", "5", "-n", "7"])
    shortlist = Shortlist.load(output)
    shortlist.check_matches(tokenizer.fingerprint, tokenizer.tgt_vocab_size, str(output))
    assert shortlist.candidates.shape == (tokenizer.src_vocab_size, 5)
    assert (shortlist.candidates < tokenizer.tgt_vocab_size).all()
    assert shortlist.frequent.tolist()[:2] == [UNK_ID, EOS_ID] and len(shortlist.frequent) == 9
    assert (shortlist.candidates[:, 0] >= 0).sum() > tokenizer.src_vocab_size // 2
    (summary,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote")]
    assert f"{tokenizer.src_vocab_size} source pieces (K=5), 9 always allowed" in summary
