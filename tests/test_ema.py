"""The moving average of the weights (--model.ema_decay): its arithmetic, what validation and
checkpoints see, exact resumption, and that 0 changes nothing."""

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from test_resume import EPOCHS, kill_after_mid_epoch_checkpoint, losses, train_command
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from seq2seq.checkpoint import check_resumable
from seq2seq.cli.train import fit_and_test, main
from seq2seq.ema import TRAINING_WEIGHTS, ExponentialMovingAverage, decay_at
from seq2seq.errors import UserError
from seq2seq.system import TranslationModule
from seq2seq.tokenizer import Tokenizer

STEPS_PER_EPOCH = 3


def weights(module: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


class Tiny(LightningModule):
    """A linear regression with a tied copy of its weight; records what validation sees."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 2)
        self.tied = nn.Linear(3, 2, bias=False)
        self.tied.weight = self.layer.weight
        self.seen: list[dict[str, Tensor]] = []

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.layer(x) + self.tied(x), y)

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        self.seen.append(weights(self))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(Callback):
    """The weights before training and after each step; before and after each validation."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Tensor]] = []
        self.validations: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.steps.append(weights(pl_module))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: object) -> None:
        self.steps.append(weights(pl_module))

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.validations.append((weights(pl_module), {}))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.validations[-1][1].update(weights(pl_module))


def fit_tiny(*callbacks: Callback, epochs: int = 2, validate: bool = True) -> Tiny:
    """Train `Tiny` on 12 random pairs (the same each call), batches of 4; validation after
    each epoch."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(12, 3), torch.randn(12, 2))
    model = Tiny()
    trainer = Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        limit_val_batches=1 if validate else 0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(data, batch_size=4)
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    return model


def hand_average(steps: list[dict[str, Tensor]], decay: float) -> dict[str, Tensor]:
    """average_0 = w_0; average_t = d_t * average_{t-1} + (1 - d_t) * w_t, in float64."""
    average = {name: w.double() for name, w in steps[0].items()}
    for t, step in enumerate(steps[1:], start=1):
        d = min(decay, (1 + t) / (10 + t))
        average = {name: d * average[name] + (1 - d) * w.double() for name, w in step.items()}
    return average


def test_decay_is_lower_for_the_first_steps() -> None:
    assert decay_at(1, 0.999) == pytest.approx(2 / 11)
    assert decay_at(8, 0.5) == 0.5 and decay_at(7, 0.5) == pytest.approx(8 / 17)
    assert decay_at(10**6, 0.999) == 0.999


def test_average_follows_the_hand_computation() -> None:
    """6 steps with decay 0.3: min(0.3, (1 + t) / (10 + t)) is below 0.3 for t < 3."""
    recorder = Recorder()
    model = fit_tiny(recorder, ExponentialMovingAverage(0.3), validate=False)
    assert len(recorder.steps) == 1 + 2 * STEPS_PER_EPOCH
    expected = hand_average(recorder.steps, 0.3)
    for name, average in weights(model).items():  # after fit, the model holds the average
        torch.testing.assert_close(average.double(), expected[name], rtol=0, atol=1e-6)
        assert not torch.equal(average, recorder.steps[-1][name])


def test_validation_sees_the_average_and_training_goes_on_from_its_weights() -> None:
    recorder = Recorder()
    model = fit_tiny(recorder, ExponentialMovingAverage(0.3))
    for epoch, (before, after) in enumerate(recorder.validations):
        steps = recorder.steps[: 1 + (epoch + 1) * STEPS_PER_EPOCH]
        expected = hand_average(steps, 0.3)
        for name, seen in model.seen[epoch].items():
            torch.testing.assert_close(seen.double(), expected[name], rtol=0, atol=1e-6)
            assert torch.equal(after[name], before[name])  # put back exactly
            assert torch.equal(before[name], steps[-1][name])
    without = Recorder()  # no validation, no average: the same training weights
    fit_tiny(without, validate=False)
    assert len(without.steps) == len(recorder.steps)
    for name, w in without.steps[-1].items():
        assert torch.equal(w, recorder.steps[-1][name])


@pytest.fixture(scope="module")
def ema_run(train_args: Callable[..., list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 steps with --model.ema_decay 0.9 and tied embeddings, then validation; -> its folder."""
    out = tmp_path_factory.mktemp("ema")
    cli = fit_and_test(
        train_args(
            out,
            *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"),
            *("--trainer.limit_val_batches", "1", "--data.test", "null"),
            *("--model.ema_decay", "0.9", "--model.tie_embeddings", "true"),
        )
    )
    torch.save(cli.model.state_dict(), out / "after_fit.pt")
    return out


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt"])
def test_checkpoint_state_dict_holds_the_average(ema_run: Path, name: str) -> None:
    checkpoint = torch.load(ema_run / "checkpoints" / name, weights_only=True)
    average, training = checkpoint["state_dict"], checkpoint[TRAINING_WEIGHTS]
    after_fit = torch.load(ema_run / "after_fit.pt", weights_only=True)  # the average
    assert average.keys() == training.keys() == after_fit.keys()
    for key, value in average.items():
        assert torch.equal(value, after_fit[key]), key
        assert not torch.equal(value, training[key]), key
    for state in (average, training):  # tied weights: one tensor under two names
        assert torch.equal(
            state["model.decoder.output.weight"], state["model.decoder.embed.weight"]
        )


def test_resuming_an_averaged_run_without_the_average_is_refused(ema_run: Path) -> None:
    path = ema_run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    tokenizer = Tokenizer.from_dict(checkpoint["tokenizer"])
    with pytest.raises(UserError, match=r"trained with --model\.ema_decay 0\.9: resume with"):
        check_resumable(checkpoint, path, tokenizer, lr=1e-3, ema_decay=0.0)
    check_resumable(checkpoint, path, tokenizer, lr=1e-3, ema_decay=0.99)


def test_decay_zero_changes_nothing(
    trained: Path, train_args: Callable[..., list[str]], tmp_path: Path
) -> None:
    """The `trained` fixture's run again with --model.ema_decay 0: the same checkpoint."""
    cli = fit_and_test(
        train_args(
            tmp_path,
            *("--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3"),
            *("--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "1"),
            *("--model.test_beam_size", "2", "--model.ema_decay", "0"),
        )
    )
    assert not any(isinstance(c, ExponentialMovingAverage) for c in cli.trainer.callbacks)
    ours, theirs = (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        for run in (tmp_path, trained)
    )
    assert ours.keys() == theirs.keys() and TRAINING_WEIGHTS not in ours
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in ours["state_dict"].items():
        assert torch.equal(value, theirs["state_dict"][key]), key


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_decay_is_a_one_line_error(
    decay: float,
    train_args: Callable[..., list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(UserError, match=r"model\.ema_decay must be at least 0 and below 1"):
        TranslationModule(ema_decay=decay)
    with pytest.raises(SystemExit) as exited:
        main(train_args(tmp_path, "--model.ema_decay", str(decay)))
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"error: model.ema_decay must be at least 0 and below 1 (0: off), not {decay}"


def test_resume_after_kill_gives_the_same_losses_and_average(
    train_args: Callable[..., list[str]], tmp_path: Path
) -> None:
    """As test_resume's test, with a moving average: the loss curve and the final average
    and training weights of a run killed mid-epoch and resumed are the uninterrupted run's."""
    ema = ("--model.ema_decay", "0.9", "--trainer.limit_val_batches", "2")
    whole = tmp_path / "whole"
    subprocess.run(train_command(train_args, whole, *ema), check=True, capture_output=True)
    expected = losses(whole)

    broken = tmp_path / "broken"
    last = broken / "checkpoints" / "last.ckpt"
    killed_at = kill_after_mid_epoch_checkpoint(train_command(train_args, broken, *ema), last)
    steps_per_epoch = len(expected) // EPOCHS
    assert 0 < killed_at < len(expected) and killed_at % steps_per_epoch != 0
    resume = train_command(train_args, broken, *ema, "--ckpt_path", str(last))
    resumed = subprocess.run(resume, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    after = {step: loss for step, loss in losses(broken).items() if step >= killed_at}
    assert sorted(after) == [step for step in sorted(expected) if step >= killed_at]
    for step, loss in after.items():
        assert loss == pytest.approx(expected[step], rel=1e-5), f"step {step}"
    ours, theirs = (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (broken, whole)
    )
    for key in ("state_dict", TRAINING_WEIGHTS):
        for name, value in ours[key].items():
            assert torch.equal(value, theirs[key][name]), f"{key} {name}"
