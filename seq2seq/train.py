"""`scripts/train.py`: LightningCLI without subcommands; fits, then tests the best checkpoint."""

import logging
import sys
from itertools import pairwise
from pathlib import Path

from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from seq2seq.datamodule import TranslationDataModule
from seq2seq.demo import write_demo_corpus
from seq2seq.errors import UserError, exit_on_user_error
from seq2seq.system import TranslationModule

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
DEMO_DATA = Path("data/demo")
LINKED_FROM_DATA = ("src_vocab_size", "tgt_vocab_size", "pad_id", "bos_id", "eos_id")


class TranslationCLI(LightningCLI):
    """Adds checkpointing and early stopping on validation BLEU, `--ckpt_path`, and size links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Checkpoint to resume training from (e.g. .../last.ckpt).",
        )
        parser.add_argument(
            "--save_last_every_n_steps",
            type=PositiveInt,
            default=1000,
            help="Also write last.ckpt every N optimizer steps, to resume mid-epoch after a crash.",
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_bleu",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch}-step{step}-bleu{val_bleu:.2f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {
                "early_stopping.monitor": "val_bleu",
                "early_stopping.mode": "max",
                "early_stopping.patience": 5,
            }
        )
        for name in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")


def main(args: list[str] | None = None) -> None:
    """Train from a config and CLI overrides; with no arguments, train the bundled demo.

    The demo config's corpus is generated on first use (see `seq2seq.demo`).
    """
    if args is None and not sys.argv[1:]:
        args = ["--config", str(DEMO_CONFIG)]
    if _uses_demo_config(sys.argv[1:] if args is None else args):
        write_demo_corpus(DEMO_DATA)
    _show_info_logs()
    try:
        fit_and_test(args)
    except UserError as err:
        exit_on_user_error(err)


def fit_and_test(args: list[str] | None) -> TranslationCLI:
    """Build everything from `args` (None: sys.argv), fit, then test the best checkpoint."""
    cli = TranslationCLI(
        TranslationModule,
        TranslationDataModule,
        args=args,
        run=False,
        seed_everything_default=1234,
        trainer_defaults={
            "default_root_dir": "runs",
            "gradient_clip_val": 1.0,
        },
        parser_kwargs={"description": "Train a recurrent encoder-decoder translation model."},
    )
    if cli.datamodule.hparams.val is None and cli.datamodule.hparams.dataset is None:
        raise UserError(
            "data.val is required: validation BLEU drives checkpoints and early stopping"
        )
    cli.trainer.callbacks.append(
        ModelCheckpoint(
            dirpath=cli.config.checkpoint.dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=cli.config.save_last_every_n_steps,
        )
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    if cli.datamodule.hparams.test is not None or cli.datamodule.hparams.dataset is not None:
        best = cli.trainer.checkpoint_callback.best_model_path or None
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best)
    return cli


def _uses_demo_config(args: list[str]) -> bool:
    configs = [Path(value) for flag, value in pairwise(args) if flag == "--config"]
    configs += [Path(arg.split("=", 1)[1]) for arg in args if arg.startswith("--config=")]
    return any(path.is_file() and path.resolve() == DEMO_CONFIG for path in configs)


def _show_info_logs() -> None:
    """Print the package's INFO logs (cache reuse, dropped pairs) on stderr, once."""
    package_logger = logging.getLogger("seq2seq")
    package_logger.setLevel(logging.INFO)
    if not any(getattr(h, "name", None) == "seq2seq-stderr" for h in package_logger.handlers):
        handler = logging.StreamHandler()
        handler.set_name("seq2seq-stderr")
        handler.setFormatter(logging.Formatter("[seq2seq] %(message)s"))
        package_logger.addHandler(handler)
