"""Resuming checks what it resumes: the tokenizer, the learning rate, Lightning's shorthands."""

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seq2seq.checkpoint import resolve_resume_path
from seq2seq.errors import UserError
from seq2seq.train import fit_and_test

# The `trained` fixture's run: 2 epochs of 3 batches, validation on 2.
LIMITS = ("--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2")


def test_resume_with_another_sentencepiece_model_is_refused(
    trained: Path, tmp_path: Path, train_args: Callable[..., list[str]]
) -> None:
    last = str(trained / "checkpoints" / "last.ckpt")
    args = train_args(tmp_path, "--data.vocab_size", "50", "--ckpt_path", last, *LIMITS)
    with pytest.raises(UserError, match=r"last\.ckpt was trained with SentencePiece model"):
        fit_and_test(args)
    assert not (tmp_path / "checkpoints").exists()  # refused before training


def test_resume_last_shorthand_warns_about_a_changed_lr(
    trained: Path,
    tmp_path: Path,
    train_args: Callable[..., list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    shutil.copytree(trained / "checkpoints", tmp_path / "checkpoints")
    extra = ("--ckpt_path", "last", "--model.lr", "0.01", "--trainer.max_epochs", "3")
    with caplog.at_level(logging.WARNING, "seq2seq"):
        cli = fit_and_test(train_args(tmp_path, *extra, *LIMITS, "--data.test", "null"))
    assert "--model.lr 0.01 is not used" in caplog.text
    assert cli.trainer.global_step == 9  # 6 steps restored, one more epoch of 3
    optimizer = cli.trainer.optimizers[0]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # the restored one


def test_best_shorthand_is_the_best_that_last_records(trained: Path) -> None:
    folder = trained / "checkpoints"
    recorded = torch.load(folder / "last.ckpt", weights_only=True)["callbacks"]
    best = [state["best_model_path"] for state in recorded.values() if "best_model_path" in state]
    assert resolve_resume_path("best", str(folder)) == Path(best[0]) == folder / "best.ckpt"
    assert resolve_resume_path("last", str(folder)) == folder / "last.ckpt"
    with pytest.raises(UserError, match=r"needs --checkpoint\.dirpath"):
        resolve_resume_path("last", None)
    with pytest.raises(UserError, match=r"no last\.ckpt"):
        resolve_resume_path("last", str(folder.parent))
