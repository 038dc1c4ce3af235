"""A checkpoint written before the attention variants existed (when `attention: bahdanau`
meant Luong's architecture with additive scores) loads as luong + additive and decodes
exactly as it did then. The checkpoint is made here, in that old format, with weights drawn
by `deterministic_state`; tests/data/legacy_luong_additive.json holds what the code of
that time (commit 9f5182c) decoded with the same weights and sources."""

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from seq2seq.checkpoint import load_checkpoint
from seq2seq.model import build_model
from seq2seq.search import beam_search, greedy_search

THEN = json.loads((Path(__file__).parent / "data" / "legacy_luong_additive.json").read_text())
LIMITS = {"max_len_a": 1.5, "max_len_b": 3}
UNUSED = {"src": b"unused", "tgt": b"unused"}  # SentencePiece models, never read here


def deterministic_state(shapes: dict[str, list[int]]) -> dict[str, Tensor]:
    """The weights the old code decoded with: one seeded stream, in name order."""
    gen = torch.Generator().manual_seed(20261201)
    return {name: torch.randn(shape, generator=gen) * 0.6 for name, shape in sorted(shapes.items())}


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in the old format: no `attention_score`, `attention: bahdanau`."""
    path = tmp_path_factory.mktemp("legacy") / "old.ckpt"
    state = {f"model.{k}": v for k, v in deterministic_state(THEN["shapes"]).items()}
    checkpoint = {"hyper_parameters": THEN["hparams"], "state_dict": state}
    torch.save(checkpoint | {"tokenizer": UNUSED}, path)
    return path


def test_old_bahdanau_reads_as_luong_with_additive_scores(old_checkpoint: Path) -> None:
    hparams = load_checkpoint(old_checkpoint)["hyper_parameters"]
    assert (hparams["attention"], hparams["attention_score"]) == ("luong", "additive")


def test_luong_without_a_recorded_score_reads_as_general(tmp_path: Path) -> None:
    """Checkpoints of `attention: luong` written while None meant Luong's general score."""
    path = tmp_path / "luong.ckpt"
    hparams = {"attention": "luong", "attention_score": None}
    torch.save({"hyper_parameters": hparams, "state_dict": {}, "tokenizer": UNUSED}, path)
    assert load_checkpoint(path)["hyper_parameters"]["attention_score"] == "general"


SCORE_RTOL = 1e-5  # float32 sums of a few dozen log-probs, in any order


def test_old_checkpoint_decodes_as_before(old_checkpoint: Path) -> None:
    checkpoint = load_checkpoint(old_checkpoint)
    model = build_model(checkpoint["hyper_parameters"]).eval()
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    )
    src, src_lengths = torch.tensor(THEN["src"]), torch.tensor(THEN["src_lengths"])
    with torch.inference_mode():
        greedy = greedy_search(model, src, src_lengths, **LIMITS)
        beam = beam_search(model, src, src_lengths, beam_size=3, nbest=2, **LIMITS)
    # Tokens exactly; scores to float32 rounding, whose reduction order changes with the
    # CPU and its thread count (two threads on an AMD EPYC differ by 1.1e-6 from the record).
    assert [h.tokens for h in greedy] == [h["tokens"] for h in THEN["greedy"]]
    assert [h.score for h in greedy] == pytest.approx(
        [h["score"] for h in THEN["greedy"]], rel=SCORE_RTOL
    )
    found = [[(h.tokens, h.score) for h in hs] for hs in beam]
    expected = [
        [(h["tokens"], pytest.approx(h["score"], rel=SCORE_RTOL)) for h in hs]
        for hs in THEN["beam3"]
    ]
    assert found == expected
