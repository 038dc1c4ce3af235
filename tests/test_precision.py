"""The CPU probes: bfloat16 LSTMs under CPU autocast (and their float32 fallback), and
flushing denormal floats to zero."""

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from seq2seq import precision
from seq2seq.cli import train
from seq2seq.cli.train import fit_and_test
from seq2seq.translator import Translator


@pytest.fixture
def unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the probe to "this CPU runs no LSTM in bfloat16", and its warning to show."""
    monkeypatch.setattr(precision, "cpu_bf16_lstm_supported", lambda: False)
    precision._say_lstm_fallback.cache_clear()


SMALLEST_NORMAL = torch.finfo(torch.float32).tiny  # 2**-126


def can_flush() -> bool:
    flushes = torch.set_flush_denormal(True)
    torch.set_flush_denormal(False)
    return flushes


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


@pytest.mark.skipif(not can_flush(), reason="this CPU cannot flush denormals to zero")
def test_flushing_zeroes_denormals_and_nothing_else() -> None:
    values = torch.tensor([SMALLEST_NORMAL / 4, SMALLEST_NORMAL, 1e-30, 1.0])
    assert (values * 1)[0] > 0  # a denormal, computed with
    assert precision.flush_denormals()
    assert torch.equal(values * 1, torch.tensor([0.0, SMALLEST_NORMAL, 1e-30, 1.0]))


@pytest.mark.skipif(not can_flush(), reason="this CPU cannot flush denormals to zero")
@pytest.mark.parametrize("flush", [True, False])
def test_threads_started_after_flushing_flush_too(flush: bool) -> None:
    """In a fresh process, as scripts/train.py does it: flushing before the intra-op
    threads start covers a multiplication that two threads share."""
    code = (
        "import torch\n"
        "from seq2seq.precision import flush_denormals\n"
        f"assert {flush} is False or flush_denormals()\n"
        "torch.set_num_threads(2)\n"
        "x = torch.full((1 << 22,), torch.finfo(torch.float32).tiny / 4)\n"
        "print(int((x * 1).count_nonzero()))\n"
    )
    counted = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert counted.returncode == 0, counted.stderr
    assert int(counted.stdout) == (0 if flush else 1 << 22)


@pytest.fixture
def cannot_flush(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Force `torch.set_flush_denormal` to fail, as on a CPU that cannot flush."""
    monkeypatch.setattr(torch, "set_flush_denormal", lambda mode: False)
    precision._say_denormals_kept.cache_clear()
    yield
    precision._say_denormals_kept.cache_clear()


def test_a_cpu_that_cannot_flush_says_so_once(
    cannot_flush: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "seq2seq"):
        assert not precision.flush_denormals()
        assert not precision.flush_denormals()
    warnings = [r for r in caplog.records if "cannot flush denormal" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.skipif(not can_flush(), reason="this CPU cannot flush denormals to zero")
def test_training_flushes_denormals(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, train_args: Callable[..., list[str]]
) -> None:
    """By `TranslationModule.on_fit_start`, as in a Trainer of the user's own (the CLI's
    own early call is switched off here)."""
    monkeypatch.setattr(train, "flush_denormals", lambda: True)
    fit_and_test(
        train_args(
            tmp_path,
            *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"),
            *("--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"),
            *("--model.test_beam_size", "1"),
        )
    )
    assert (torch.tensor([SMALLEST_NORMAL / 4]) * 1)[0] == 0
