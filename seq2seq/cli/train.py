"""`scripts/train.py`: LightningCLI without subcommands; fits, then tests the best checkpoint."""

import logging
import sys
from argparse import ArgumentError
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from seq2seq.best_checkpoint import BEST_NAME, BestCheckpointLink
from seq2seq.cache import global_rank, wait_for_file
from seq2seq.checkpoint import (
    check_architecture,
    check_resumable,
    load_checkpoint,
    load_weights,
    resolve_resume_path,
    unpack_tokenizer,
)
from seq2seq.corpus import resolve_corpus_file
from seq2seq.datamodule import SPLITS, TranslationDataModule
from seq2seq.demo import STAMP, write_demo_corpus
from seq2seq.errors import UserError, exit_on_user_error
from seq2seq.precision import flush_denormals
from seq2seq.system import TranslationModule

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
DEMO_DATA = Path("data/demo")
DEMO_WAIT_SECONDS = 600
LINKED_FROM_DATA = ("src_vocab_size", "tgt_vocab_size", "pad_id", "bos_id", "eos_id")


class TranslationCLI(LightningCLI):
    """Adds checkpointing and early stopping on validation BLEU, `--ckpt_path`, and size links."""

    init_checkpoint: dict[str, Any] | None = None  # --init_from's, read once (mapped)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Checkpoint to resume training from: a file, or last (last.ckpt in "
            "--checkpoint.dirpath) or best (the best checkpoint that last.ckpt records).",
        )
        parser.add_argument(
            "--init_from",
            type=str | None,
            default=None,
            help="Start a new run (fine-tuning) from this checkpoint's weights and SentencePiece "
            "model(s): new optimizer, schedule and step count; model settings as it has them. "
            "With --ckpt_path: resume such a run.",
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
                # Overwrite, never add "-v1": last.ckpt is written by two callbacks (see
                # fit_and_test), and a rerun's best checkpoint keeps its configured name.
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {
                "early_stopping.monitor": "val_bleu",
                "early_stopping.mode": "max",
                "early_stopping.patience": 5,
                # After each validation only: a run that stops before its first one
                # (max_steps, max_time, limit_train_batches) has no val_bleu to check.
                "early_stopping.check_on_train_epoch_end": False,
            }
        )
        for name in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Derive the run's folders and data seed; check the corpus files before SentencePiece
        trains (it does when the model is built)."""
        self._derive_run_settings()
        data = self.config.data
        if data.val is None and data.dataset is None:
            raise UserError(
                "data.val is required: validation BLEU drives checkpoints and early stopping"
            )
        for split in SPLITS:
            prefix = getattr(data, split)
            if prefix is not None:
                for lang in (data.src_lang, data.tgt_lang):
                    resolve_corpus_file(prefix, lang)
        checkpoint = self.config.checkpoint
        if checkpoint.save_top_k not in (0, 1) and "{" not in (checkpoint.filename or "{"):
            raise UserError(
                f"--checkpoint.save_top_k {checkpoint.save_top_k} keeps several checkpoints, but "
                f"--checkpoint.filename {checkpoint.filename} names them alike: put {{step}} in it"
            )
        if self.config.init_from is not None:
            self._use_init_checkpoint(self.config.init_from)

    def _derive_run_settings(self) -> None:
        """What is unset follows the run folder (`trainer.default_root_dir`: `checkpoints/`
        and a CSV log) and `seed_everything` (the batch order, `data.seed`)."""
        root = Path(self.config.trainer.default_root_dir)
        if self.config.checkpoint.dirpath is None:
            self.config.checkpoint.dirpath = str(root / "checkpoints")
        if self.config.trainer.logger in (None, True):
            self.config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=str(root)),
            )
        seed = self.config.seed_everything
        if self.config.data.seed is None and not isinstance(seed, bool):
            self.config.data.seed = seed

    def _use_init_checkpoint(self, path: str) -> None:
        """Check the model settings against the checkpoint; its tokenizer becomes the data's.
        Kept as `init_checkpoint` for `fit_and_test` to copy its weights."""
        dirpath = self.config.checkpoint.dirpath
        if dirpath is not None and Path(path).resolve().parent == Path(dirpath).resolve():
            raise UserError(
                f"--init_from {path} is in --checkpoint.dirpath {dirpath}, which the new run "
                "would overwrite: give another --checkpoint.dirpath"
            )
        data = self.config.data
        if data.spm_model is not None:
            raise UserError("--init_from brings its SentencePiece model(s): drop data.spm_model")
        # Mapped: outside the run's folder (checked above), nothing overwrites it; only the
        # tensors that the weights' copy touches are read.
        self.init_checkpoint = checkpoint = load_checkpoint(path, mmap=True)
        check_architecture(
            checkpoint["hyper_parameters"],
            self.config.model.as_dict(),
            refusal=f"--init_from {path}",
            saved_name="the checkpoint's",
        )
        files = unpack_tokenizer(checkpoint, Path(data.cache_dir))
        data.spm_model = str(files[0])
        data.spm_tgt_model = str(files[1]) if len(files) > 1 else None


def main(args: list[str] | None = None) -> None:
    """Train from a config and CLI overrides (`args`, or the command line).

    Without `--config` and without a corpus (`--data.train`, `--data.dataset`), the
    demo config is the base and the options apply on top of it. The demo config's
    corpus is generated on first use (see `seq2seq.demo`).
    """
    _show_info_logs()
    try:
        given = sys.argv[1:] if args is None else args
        if _needs_base_config(given):
            base = ["--config", str(demo_config())]
            if args is None:
                sys.argv[1:1] = base  # LightningCLI reads the command line itself
            else:
                args = [*base, *args]
        if _uses_demo_config(sys.argv[1:] if args is None else args):
            _prepare_demo_corpus()
        fit_and_test(args)
    except UserError as err:
        exit_on_user_error(err)


def _needs_base_config(args: list[str]) -> bool:
    """Whether `args` give no config, no corpus and no `--help`."""
    flags = ("-c", "--config", "--data.train", "--data.dataset", "--data", "-h", "--help")
    return not any(arg.split("=", 1)[0] in flags for arg in args)


def _prepare_demo_corpus() -> None:
    """Written by global rank 0 (under torchrun or SLURM); the other processes wait for it."""
    if global_rank() == 0:
        write_demo_corpus(DEMO_DATA)
    else:
        wait_for_file(DEMO_DATA / STAMP, "demo corpus", DEMO_WAIT_SECONDS)


def demo_config() -> Path:
    """configs/demo.yaml of the source checkout this package runs from."""
    if not DEMO_CONFIG.is_file():
        raise UserError(
            f"the demo config {DEMO_CONFIG} is missing (seq2seq is installed outside its "
            "source checkout): give --config, e.g. the checkout's configs/demo.yaml"
        )
    return DEMO_CONFIG


def fit_and_test(args: list[str] | None) -> TranslationCLI:
    """Build everything from `args` (None: sys.argv), fit, then test the best checkpoint.

    A bad command line or config raises UserError (`--help` and `--print_config` exit).
    """
    flush_denormals()  # before any thread pool starts: its threads inherit the flag
    check_config_files(sys.argv[1:] if args is None else args)
    try:
        cli = TranslationCLI(
            TranslationModule,
            TranslationDataModule,
            args=args,
            run=False,
            seed_everything_default=1234,
            trainer_defaults={
                "default_root_dir": "runs",
                "gradient_clip_val": 1.0,
                "use_distributed_sampler": False,  # the data module's sampler shards by rank
            },
            parser_kwargs={
                "description": "Train a recurrent encoder-decoder translation model. "
                "Without --config and without --data.train (or --data.dataset), "
                "configs/demo.yaml is the base config and the options given apply on top.",
                "exit_on_error": False,
            },
        )
    except ArgumentError as err:
        raise UserError(f"{err} (see --help)") from err
    cli.trainer.callbacks.append(
        ModelCheckpoint(
            dirpath=cli.config.checkpoint.dirpath,
            save_top_k=0,
            enable_version_counter=False,
            save_last=True,
            every_n_train_steps=cli.config.save_last_every_n_steps,
        )
    )
    if Path(cli.config.checkpoint.filename or "").name != Path(BEST_NAME).stem:
        cli.trainer.callbacks.append(BestCheckpointLink(cli.trainer.checkpoint_callback))
    if cli.init_checkpoint is not None and cli.config.ckpt_path is None:  # else: resuming
        load_weights(cli.model, cli.init_checkpoint, cli.config.init_from)
    cli.init_checkpoint = None  # not held while training
    resume = _checked_resume_path(cli)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume)
    if cli.datamodule.hparams.test is not None or cli.datamodule.hparams.dataset is not None:
        best = cli.trainer.checkpoint_callback.best_model_path or None
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best)
    return cli


def _checked_resume_path(cli: TranslationCLI) -> Path | None:
    """The checkpoint of `--ckpt_path`, checked against the data and model settings (None:
    not resuming). The check maps the file and reads no tensor: Lightning reads them in fit."""
    if cli.config.ckpt_path is None:
        return None
    resume = resolve_resume_path(cli.config.ckpt_path, cli.config.checkpoint.dirpath)
    checkpoint = load_checkpoint(resume, mmap=True)  # clear errors, and never unpickles code
    hparams = cli.model.hparams
    saved = checkpoint["hyper_parameters"]
    check_architecture(saved, hparams, refusal=f"--ckpt_path {resume}", saved_name="the run's")
    check_resumable(checkpoint, resume, cli.datamodule.tokenizer, hparams.lr, hparams.ema_decay)
    return resume


def check_config_files(args: list[str]) -> None:
    """Each existing `--config` file must be valid YAML; errors name its file and line."""
    for path in _config_paths(args):
        if not path.is_file():
            continue  # jsonargparse says it does not exist, or reads the value as YAML text
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: invalid UTF-8 at byte {err.start}") from None
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise UserError(f"{where}: invalid YAML: {err.problem or err.context}") from None
        except yaml.YAMLError as err:
            raise UserError(f"{path}: invalid YAML: {err}") from None


def _config_paths(args: list[str]) -> list[Path]:
    paths = [Path(value) for flag, value in pairwise(args) if flag == "--config"]
    return paths + [Path(arg.split("=", 1)[1]) for arg in args if arg.startswith("--config=")]


def _uses_demo_config(args: list[str]) -> bool:
    paths = _config_paths(args)
    return any(path.is_file() and path.resolve() == DEMO_CONFIG for path in paths)


def _show_info_logs() -> None:
    """Print the package's INFO logs (cache reuse, dropped pairs) on stderr, once."""
    package_logger = logging.getLogger("seq2seq")
    package_logger.setLevel(logging.INFO)
    if not any(getattr(h, "name", None) == "seq2seq-stderr" for h in package_logger.handlers):
        handler = logging.StreamHandler()
        handler.set_name("seq2seq-stderr")
        handler.setFormatter(logging.Formatter("[seq2seq] %(message)s"))
        package_logger.addHandler(handler)
