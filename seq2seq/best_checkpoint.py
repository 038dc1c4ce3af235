"""`best.ckpt`: a stable name for the best checkpoint of a run, as JoeyNMT's `best.ckpt` and
fairseq's `checkpoint_best.pt`, beside the scored names that `ModelCheckpoint` writes."""

import os
import shutil
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

BEST_NAME = "best.ckpt"


class BestCheckpointLink(Checkpoint):
    """Keeps `best.ckpt` in the folder of `source`'s best checkpoint, a hard link to it (a
    copy where the file system has none), replaced atomically whenever the best changes.

    Lightning runs `Checkpoint` callbacks after the others, in the order given: appended
    after `source`, this one sees each new best just after it is written.
    """

    def __init__(self, source: ModelCheckpoint) -> None:
        self.source = source
        self._linked: str | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update(trainer)

    def _update(self, trainer: Trainer) -> None:
        best = self.source.best_model_path
        if not trainer.is_global_zero or not best or best == self._linked:
            return
        target = Path(best).with_name(BEST_NAME)
        if Path(best) != target:
            link_or_copy(Path(best), target)
        self._linked = best


def link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes `source`'s content at once: a hard link, else a copy, renamed in."""
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)
