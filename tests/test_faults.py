"""Faults: non-finite losses, half-written or concurrently built caches, untrusted files."""

import logging
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seq2seq.errors import UserError
from seq2seq.system import TranslationModule
from seq2seq.train import fit_and_test

ROOT = Path(__file__).resolve().parents[1]


def poison_training_batches(monkeypatch: pytest.MonkeyPatch, bad: Callable[[int], bool]) -> None:
    """Make the logits NaN in the training forward passes whose number (from 0) is `bad`."""
    original, calls = TranslationModule.forward, []

    def forward(self: TranslationModule, *args: torch.Tensor) -> torch.Tensor:
        logits = original(self, *args)
        if not self.training:
            return logits
        calls.append(None)
        return logits * math.nan if bad(len(calls) - 1) else logits

    monkeypatch.setattr(TranslationModule, "forward", forward)


def run_args(train_args: Callable[..., list[str]], out: Path) -> list[str]:
    return train_args(
        out,
        *("--trainer.max_epochs", "1", "--data.test", "null", "--save_last_every_n_steps", "2"),
        *("--model.max_nonfinite_losses", "3"),
    )


def test_a_non_finite_loss_skips_its_batch(
    train_args: Callable[..., list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    poison_training_batches(monkeypatch, lambda call: call == 2)
    with caplog.at_level(logging.WARNING, logger="seq2seq"):
        cli = fit_and_test(run_args(train_args, tmp_path))
    assert "non-finite training loss at epoch 0, batch 2, step 2: batch skipped" in caplog.text
    # Adam counts the updates it made to each parameter: one fewer than batches.
    optimizer = cli.trainer.optimizers[0]
    updates = {int(optimizer.state[p]["step"]) for p in cli.model.parameters()}
    assert updates == {cli.trainer.num_training_batches - 1}
    assert all(p.isfinite().all() for p in cli.model.parameters())


def test_non_finite_losses_in_a_row_stop_training(
    train_args: Callable[..., list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison_training_batches(monkeypatch, lambda call: call >= 4)
    with pytest.raises(UserError, match="3 batches in a row had a non-finite loss"):
        fit_and_test(run_args(train_args, tmp_path))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert 4 <= last["global_step"] <= 6  # written before the third bad batch
    assert all(t.isfinite().all() for t in last["state_dict"].values())
