"""Resuming checks what it resumes (the tokenizer, the learning rate, Lightning's shorthands);
fine-tuning starts from a checkpoint's weights and tokenizer."""

import logging
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seq2seq.checkpoint import check_architecture, resolve_resume_path
from seq2seq.cli.train import fit_and_test
from seq2seq.demo import write_demo_corpus
from seq2seq.errors import UserError
from seq2seq.system import TranslationModule

# The `trained` fixture's run: 2 epochs of 3 batches, validation on 2.
LIMITS = ("--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2")
ONE_BATCH = ("--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--model.hidden_size", "24"), r"model\.hidden_size is 24, the run's 16"),
        (("--data.vocab_size", "50"), r"last\.ckpt was trained with SentencePiece model"),
    ],
    ids=["architecture", "sentencepiece"],
)
def test_resume_with_other_settings_is_refused(
    trained: Path,
    tmp_path: Path,
    train_args: Callable[..., list[str]],
    change: tuple[str, str],
    message: str,
) -> None:
    last = str(trained / "checkpoints" / "last.ckpt")
    with pytest.raises(UserError, match=message):
        fit_and_test(train_args(tmp_path, *change, "--ckpt_path", last, *LIMITS))
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
    assert resolve_resume_path("best", str(folder)) == Path(best[0])
    assert Path(best[0]).read_bytes() == (folder / "best.ckpt").read_bytes()
    assert resolve_resume_path("last", str(folder)) == folder / "last.ckpt"
    with pytest.raises(UserError, match=r"needs --checkpoint\.dirpath"):
        resolve_resume_path("last", None)
    with pytest.raises(UserError, match=r"no last\.ckpt"):
        resolve_resume_path("last", str(folder.parent))


def test_fine_tuning_keeps_the_vocabulary_and_lowers_the_loss_on_new_data(
    trained: Path, tmp_path: Path, train_args: Callable[..., list[str]]
) -> None:
    new = write_demo_corpus(tmp_path / "new", seed=11, sizes={"train": 300, "val": 30})
    start = trained / "checkpoints" / "best.ckpt"
    corpus = ("--data.train", str(new / "train"), "--data.val", str(new / "val"))
    run = tmp_path / "run"
    extra = ("--init_from", str(start), *corpus, "--data.test", "null")
    cli = fit_and_test(train_args(run, *extra, "--trainer.max_epochs", "2", *LIMITS))
    assert cli.trainer.global_step == 6  # a new run: its own steps from 0
    before, after = (
        torch.load(p, weights_only=True) for p in (start, run / "checkpoints" / "last.ckpt")
    )
    assert after["tokenizer"] == before["tokenizer"]  # no SentencePiece trained on the new data
    started = TranslationModule.load_from_checkpoint(start)
    (loss_before,) = cli.trainer.validate(started, datamodule=cli.datamodule, verbose=False)
    (loss_after,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert loss_after["val_loss"] < loss_before["val_loss"]
    more = ("--trainer.max_epochs", "3", "--ckpt_path", "last")  # the same command, resumed
    resumed = fit_and_test(train_args(run, *extra, *more, *LIMITS))
    assert resumed.trainer.global_step == 9
    assert torch.load(run / "checkpoints" / "last.ckpt")["tokenizer"] == before["tokenizer"]


def test_fine_tuning_and_resuming_read_each_checkpoint_once(
    trained: Path,
    tmp_path: Path,
    train_args: Callable[..., list[str]],
    torch_loads: Counter[tuple[str, bool]],
) -> None:
    """--init_from: one mapped read for the checks, the tokenizer and the weights. Resuming:
    the check maps the file and reads no tensor; Lightning reads it for the run."""
    start = str(trained / "checkpoints" / "best.ckpt")
    last = str(tmp_path / "checkpoints" / "last.ckpt")
    args = train_args(tmp_path, "--init_from", start, "--data.test", "null", *ONE_BATCH)
    fit_and_test([*args, "--trainer.max_epochs", "1"])
    assert torch_loads == {(start, True): 1}
    torch_loads.clear()
    fit_and_test([*args, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert torch_loads == {(start, True): 1, (last, True): 1, (last, False): 1}


def test_architecture_check_names_each_difference_for_its_caller() -> None:
    """What --init_from and averaging both check: the architecture settings that the
    checkpoint records, an attention score None read as its attention's default."""
    saved = {"cell": "gru", "attention": "luong", "attention_score": None, "hidden_size": 16}
    same = saved | {"attention_score": "additive", "embed_dim": 8, "lr": 0.5}  # 2 unchecked
    check_architecture(saved, same, refusal="--init_from a.ckpt", saved_name="the checkpoint's")
    other = same | {"cell": "lstm", "attention_score": "dot", "hidden_size": 24}
    with pytest.raises(UserError) as refused:
        check_architecture(saved, other, refusal="cannot average b with a", saved_name="a's")
    assert str(refused.value) == (
        "cannot average b with a: model.cell is 'lstm', a's 'gru'; "
        "model.attention_score is 'dot', a's 'additive'; model.hidden_size is 24, a's 16"
    )


def test_fine_tuning_refuses_to_write_over_its_start(
    trained: Path, train_args: Callable[..., list[str]]
) -> None:
    start = str(trained / "checkpoints" / "best.ckpt")
    with pytest.raises(UserError, match="would overwrite"):
        fit_and_test(train_args(trained, "--init_from", start))


def test_fine_tuning_refuses_another_architecture(
    trained: Path, tmp_path: Path, train_args: Callable[..., list[str]]
) -> None:
    start = str(trained / "checkpoints" / "best.ckpt")
    args = train_args(tmp_path, "--init_from", start, "--model.hidden_size", "24")
    with pytest.raises(UserError, match=r"model\.hidden_size is 24, the checkpoint's 16"):
        fit_and_test(args)


# Validation on 1 batch that never stops training early.
VALIDATING_ON = ("--trainer.limit_val_batches", "1", "--early_stopping.patience", "1000")


class Crash(Exception):
    """Stands for a process killed mid-epoch."""


@pytest.mark.parametrize(
    ("saved", "saving"),
    [
        ("last", ("--save_last_every_n_steps", "2")),  # saved at a batch's end
        ("best", ("--trainer.val_check_interval", "2", *VALIDATING_ON)),  # after validation
    ],
)
def test_resume_under_another_batching_restarts_the_epoch(
    saved: str,
    saving: tuple[str, ...],
    tmp_path: Path,
    train_args: Callable[..., list[str]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed at step 3 of epoch 0, resumed with other batches: after the 2 steps saved,
    epoch 0 trains again on every example once, in as many batches as it now has."""
    start_batch = TranslationModule.on_train_batch_start
    seen: list[int] = []

    def crash_at_step_3(module: TranslationModule, batch: dict, batch_idx: int) -> None:
        if module.global_step == 3:
            raise Crash
        start_batch(module, batch, batch_idx)

    def record(module: TranslationModule, batch: dict, batch_idx: int) -> None:
        seen.extend(batch["index"].tolist())
        start_batch(module, batch, batch_idx)

    common = ("--data.test", "null", *saving)
    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(TranslationModule, "on_train_batch_start", crash_at_step_3)
        fit_and_test(train_args(tmp_path, *common))  # a checkpoint at step 2, mid-epoch 0
    more = ("--trainer.max_epochs", "1", "--ckpt_path", saved, "--data.max_tokens", "300")
    monkeypatch.setattr(TranslationModule, "on_train_batch_start", record)
    with caplog.at_level(logging.WARNING, "seq2seq"):
        cli = fit_and_test(train_args(tmp_path, *common, *more))
    assert "epoch 0 restarts from its beginning with the new batching" in caplog.text
    assert cli.trainer.global_step == 2 + cli.trainer.num_training_batches
    assert sorted(seen) == list(range(len(cli.datamodule.train_dataloader().dataset)))
