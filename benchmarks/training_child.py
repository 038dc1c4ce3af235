"""What the benchmarks' training children share: our CLI set up for a short timed run."""

import time
from typing import Any

from lightning.pytorch.callbacks import Callback

from seq2seq.cli.train import TranslationCLI
from seq2seq.datamodule import TranslationDataModule
from seq2seq.system import TranslationModule


class StepClock(Callback):
    """The start time and the (source, target) non-pad tokens of every training batch."""

    def __init__(self) -> None:
        self.starts: list[float] = []  # time.perf_counter()
        self.tokens: list[tuple[int, int]] = []
        self.last_batch: dict[str, Any] | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())
        target = int((batch["tgt_out"] != module.hparams.pad_id).sum())
        self.tokens.append((int(batch["src_lengths"].sum()), target))
        self.last_batch = batch


def short_run(config: str, out_dir: str, max_steps: int, overrides: list[str]) -> TranslationCLI:
    """`scripts/train.py`'s CLI for `config` + `overrides`, built (SentencePiece trained or
    loaded) but not run: `max_steps` updates, no validation, test, logger or progress bar."""
    args = ["--config", config, "--trainer.max_steps", str(max_steps), *overrides]
    args += ["--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"]
    args += ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.enable_model_summary", "false", "--trainer.max_epochs", "1000"]
    args += ["--data.test", "null", "--trainer.default_root_dir", out_dir]
    args += ["--checkpoint.dirpath", out_dir, "--checkpoint.monitor", "null"]
    args += ["--early_stopping.strict", "false"]  # no val_bleu without validation
    return TranslationCLI(
        TranslationModule, TranslationDataModule, args=args, run=False, save_config_callback=None
    )
