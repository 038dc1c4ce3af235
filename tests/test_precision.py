"""The bfloat16 capability probe and the float32 fallback of LSTM layers under CPU autocast."""

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from seq2seq import precision
from seq2seq.cli.train import fit_and_test
from seq2seq.translator import Translator


@pytest.fixture
def unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the probe to "this CPU runs no LSTM in bfloat16", and its warning to show."""
    monkeypatch.setattr(precision, "cpu_bf16_lstm_supported", lambda: False)
    precision._say_lstm_fallback.cache_clear()


def test_probe_agrees_with_an_lstm_under_autocast() -> None:
    lstm = nn.LSTM(8, 8, batch_first=True)
    with torch.autocast("cpu", torch.bfloat16):
        if precision.cpu_bf16_lstm_supported():
            assert lstm(torch.randn(2, 3, 8))[0].dtype == torch.bfloat16
        else:
            with pytest.raises(RuntimeError):
                lstm(torch.randn(2, 3, 8))


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_only_lstm_under_cpu_bf16_autocast_falls_back(unsupported: None, mode: str) -> None:
    rnn = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN}[mode](4, 4)
    inputs = torch.zeros(2, 3, 4)
    assert not precision.needs_fp32(rnn, inputs)  # no autocast
    with torch.autocast("cpu", torch.bfloat16):
        assert precision.needs_fp32(rnn, inputs) == (mode == "LSTM")
    with torch.autocast("cpu", torch.float16):
        assert not precision.needs_fp32(rnn, inputs)


def test_fallback_runs_the_lstm_in_fp32_and_says_so_once(
    unsupported: None, caplog: pytest.LogCaptureFixture
) -> None:
    lstm = nn.LSTM(8, 8, batch_first=True)
    inputs = torch.randn(2, 3, 8)
    expected, _ = lstm(inputs)
    with caplog.at_level(logging.WARNING, "seq2seq"), torch.autocast("cpu", torch.bfloat16):
        state = (torch.zeros(1, 2, 8, dtype=torch.bfloat16),) * 2
        first, (hidden, cell) = precision.run_rnn(lstm, inputs.bfloat16(), state)
        second, _ = precision.run_rnn(lstm, inputs, state)
    assert first.dtype == hidden.dtype == cell.dtype == second.dtype == torch.float32
    torch.testing.assert_close(second, expected)  # fp32 all through: the same numbers
    torch.testing.assert_close(first, expected, atol=0.02, rtol=0)  # inputs rounded to bf16
    warnings = [r for r in caplog.records if "float32 inside bf16 autocast" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.slow
def test_lstm_trains_in_bf16_mixed_and_translates_in_bf16_without_support(
    unsupported: None, tmp_path: Path, train_args: Callable[..., list[str]]
) -> None:
    """What `--trainer.precision bf16-mixed` and `translate.py --precision bf16` run with an
    LSTM model on a CPU without bf16 LSTM support (AVX2 only)."""
    fit_and_test(
        train_args(
            tmp_path,
            *("--model.cell", "lstm", "--trainer.precision", "bf16-mixed"),
            *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"),
            *("--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"),
            *("--model.test_beam_size", "2"),
        )
    )
    metrics = (next(tmp_path.glob("**/metrics.csv"))).read_text()
    assert "test_bleu" in metrics
    translator = Translator.from_checkpoint(tmp_path / "checkpoints" / "best.ckpt", device="cpu")
    sentences = ["einundzwanzig", "dreihundert"]
    fp32 = translator.translate_nbest(sentences, beam_size=2)
    bf16 = translator.translate_nbest(sentences, beam_size=2, precision="bf16")
    for full, half in zip(fp32, bf16, strict=True):
        assert half[0].score == pytest.approx(full[0].score, abs=0.1)
