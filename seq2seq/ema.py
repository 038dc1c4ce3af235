"""An exponential moving average of the weights during training (Marian's exponential smoothing).

After every optimizer step, each trainable weight's average moves towards it:
`average = d * average + (1 - d) * weight`, in float32 on the model's device. The
average is what validation (and so checkpoint selection, early stopping and the
plateau schedule) sees, what a checkpoint's `state_dict` holds, and what the model
holds after training (what test sees). The training weights go on under
`TRAINING_WEIGHTS` in each checkpoint, so that a resumed run continues exactly.
"""

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from seq2seq.checkpoint import TRAINING_WEIGHTS
from seq2seq.errors import UserError

Weights = dict[str, Tensor]


def check_ema_decay(decay: float) -> None:
    """0 (off) or a decay in (0, 1)."""
    if not 0 <= decay < 1:
        raise UserError(f"model.ema_decay must be at least 0 and below 1 (0: off), not {decay}")


def decay_at(step: int, decay: float) -> float:
    """The decay of optimizer step `step` (1, 2, ...): `decay`, but lower while few steps are
    averaged, min(decay, (1 + step) / (10 + step)), as Marian and TensorFlow's
    ExponentialMovingAverage do, so that the first weights do not linger."""
    return min(decay, (1 + step) / (10 + step))


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    """name -> parameter, each trainable parameter once (under its first name)."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


class ExponentialMovingAverage(Callback):
    """Keeps the moving average of `decay` (in (0, 1)) from the start of `fit`; see the module."""

    def __init__(self, decay: float) -> None:
        check_ema_decay(decay)
        self.decay = decay
        self._average: Weights = {}  # float32 averages, by `trainable`'s names; empty outside fit
        self._training: Weights | None = None  # set aside while the model holds the average
        self._step = 0  # the last optimizer step averaged

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # before a checkpoint is restored: `on_load_checkpoint` overwrites
            device = pl_module.device  # where the strategy will put the model
            self._average = {
                name: p.detach().to(device, torch.float32, copy=True)
                for name, p in trainable(pl_module).items()
            }

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._step = trainer.global_step  # a resumed run's average includes its steps

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        if trainer.global_step > self._step:  # an optimizer step (not an accumulating batch)
            self._step = trainer.global_step
            weight = 1.0 - decay_at(self._step, self.decay)
            for name, p in trainable(pl_module).items():  # average += weight * (p - average)
                self._average[name].lerp_(p.detach().float(), weight)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._use_average(pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._use_training(pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._use_average(pl_module)  # for test, and what the caller gets back

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._average, self._training = {}, None  # after fit: no more averaging

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        if not self._average:
            return
        state = checkpoint["state_dict"]
        aside = {} if self._training is None else _by_all_names(pl_module, self._training)
        checkpoint[TRAINING_WEIGHTS] = state | aside
        checkpoint["state_dict"] = state | _by_all_names(pl_module, self._average)

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict
    ) -> None:
        """Resume: the average from `state_dict`, the training weights from `TRAINING_WEIGHTS`
        (a checkpoint without them: the average starts from its weights)."""
        if not self._average:
            return
        if TRAINING_WEIGHTS in checkpoint:
            pl_module.load_state_dict(checkpoint[TRAINING_WEIGHTS])
            source = checkpoint["state_dict"]
        else:
            source = trainable(pl_module)
        with torch.no_grad():
            for name, average in self._average.items():
                average.copy_(source[name])

    def _use_average(self, pl_module: LightningModule) -> None:
        """Put the average into the model, keeping the training weights aside."""
        if not self._average or self._training is not None:
            return
        params = trainable(pl_module)
        self._training = {name: p.detach().clone() for name, p in params.items()}
        _copy_into(params, self._average)

    def _use_training(self, pl_module: LightningModule) -> None:
        """Put the training weights back, exactly."""
        if self._training is not None:
            _copy_into(trainable(pl_module), self._training)
            self._training = None


def _copy_into(params: dict[str, nn.Parameter], values: Weights) -> None:
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(values[name])


def _by_all_names(module: nn.Module, values: Weights) -> Weights:
    """`values` (by `trainable`'s names) under every name of their parameters, as
    `state_dict` has them (tied weights have two)."""
    first = {id(p): name for name, p in trainable(module).items()}
    return {
        name: values[first[id(p)]]
        for name, p in module.named_parameters(remove_duplicate=False)
        if id(p) in first
    }
