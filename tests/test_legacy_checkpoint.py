"""A checkpoint written before the attention variants existed (tests/data, made at the
commit its JSON names, when `attention: bahdanau` meant Luong's architecture with additive
scores) loads as luong + additive and translates exactly as it did then."""

import json
from pathlib import Path

import pytest

from seq2seq.checkpoint import load_checkpoint
from seq2seq.translator import Translator

DATA = Path(__file__).parent / "data"
CHECKPOINT = DATA / "legacy_luong_additive.ckpt"


def test_old_bahdanau_reads_as_luong_with_additive_scores() -> None:
    hparams = load_checkpoint(CHECKPOINT)["hyper_parameters"]
    assert (hparams["attention"], hparams["attention_score"]) == ("luong", "additive")


@pytest.mark.parametrize("beam_size", [1, 3])
def test_old_checkpoint_translates_as_before(beam_size: int) -> None:
    then = json.loads((DATA / "legacy_luong_additive.json").read_text(encoding="utf-8"))
    translator = Translator.from_checkpoint(CHECKPOINT, device="cpu")
    ranked = translator.translate_nbest(then["sources"], beam_size=beam_size)
    now = [{"text": r[0].text, "tokens": r[0].tokens, "score": r[0].score} for r in ranked]
    expected = then[f"beam{beam_size}"]
    assert [n["tokens"] for n in now] == [e["tokens"] for e in expected]
    assert [n["text"] for n in now] == [e["text"] for e in expected]
    assert [n["score"] for n in now] == pytest.approx([e["score"] for e in expected], abs=1e-6)
