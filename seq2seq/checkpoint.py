"""Training checkpoints: read safely, and checked before training resumes from one."""

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seq2seq.errors import UserError, first_line
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (`weights_only=True`); clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a PyTorch checkpoint (not a zip archive, or truncated)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # the safe unpickler met a non-plain object
        reason = _unpickler_reason(err)
        raise UserError(
            f"{path}: refused to load, it holds more than plain data ({reason})"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise UserError(f"{path}: not a readable checkpoint ({first_line(err)})") from err
    if not isinstance(checkpoint, dict):
        kind = type(checkpoint).__name__
        raise UserError(f"{path}: not a seq2seq training checkpoint (it holds a {kind})")
    missing = [k for k in ("hyper_parameters", "state_dict", "tokenizer") if k not in checkpoint]
    if missing:
        raise UserError(f"{path}: not a seq2seq training checkpoint (no {', '.join(missing)})")
    models, sides = checkpoint["tokenizer"], ("src", "tgt")  # see `Tokenizer.to_dict`
    if not isinstance(models, dict) or not all(isinstance(models.get(s), bytes) for s in sides):
        raise UserError(
            f"{path}: its SentencePiece models (tokenizer.src, tokenizer.tgt) are missing"
        )
    return checkpoint


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    """The line of torch's long weights-only error that says what was refused."""
    for line in str(err).splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0]
    return first_line(err)


def resolve_resume_path(ckpt_path: str, dirpath: str | None) -> Path:
    """`--ckpt_path`: a file, or Lightning's shorthands "last" (last.ckpt in the checkpoint
    folder) and "best" (the best checkpoint that last.ckpt records)."""
    if ckpt_path not in ("last", "best"):
        return Path(ckpt_path)
    if dirpath is None:
        raise UserError(
            f"--ckpt_path {ckpt_path} needs --checkpoint.dirpath, the folder to look in"
        )
    last = Path(dirpath) / "last.ckpt"
    if not last.is_file():
        raise UserError(f"--ckpt_path {ckpt_path}: no last.ckpt in {dirpath}")
    if ckpt_path == "last":
        return last
    states = load_checkpoint(last).get("callbacks", {})
    best = [s["best_model_path"] for s in states.values() if s.get("best_model_path")]
    if not best:
        raise UserError(f"--ckpt_path best: {last} records no best checkpoint")
    return Path(best[0])


def check_resumable(
    checkpoint: dict[str, Any], path: Path, tokenizer: Tokenizer, lr: float
) -> None:
    """Before training resumes from `checkpoint`: its SentencePiece models must be those
    the data gives (else the token ids change meaning); a changed learning rate is warned
    about (the optimizer state restored from the checkpoint keeps its own)."""
    saved = Tokenizer.from_dict(checkpoint["tokenizer"])
    if saved.fingerprint != tokenizer.fingerprint:
        raise UserError(
            f"{path} was trained with SentencePiece model(s) {saved.fingerprint}, but the "
            f"data gives {tokenizer.fingerprint} (a changed corpus or vocabulary setting "
            "trains new ones): resume with the data and settings of that run"
        )
    trained_lr = checkpoint["hyper_parameters"].get("lr")
    if trained_lr is not None and trained_lr != lr:
        log.warning(
            "--model.lr %g is not used: resuming restores the optimizer and schedule of %s "
            "(trained with --model.lr %g)",
            lr,
            path,
            trained_lr,
        )


ARCHITECTURE = (
    "cell",
    "attention",
    "embed_dim",
    "hidden_size",
    "encoder_layers",
    "decoder_layers",
    "bidirectional",
    "tie_embeddings",
)


def check_architecture(checkpoint: dict[str, Any], path: str, model: dict[str, Any]) -> None:
    """The model settings of a run that starts from `checkpoint`'s weights must be its own."""
    saved = checkpoint["hyper_parameters"]
    differ = [
        f"model.{name} is {model[name]!r}, the checkpoint's {saved[name]!r}"
        for name in ARCHITECTURE
        if name in saved and model.get(name) != saved[name]
    ]
    if differ:
        raise UserError(f"--init_from {path}: " + "; ".join(differ))


def unpack_tokenizer(checkpoint: dict[str, Any], directory: Path) -> list[Path]:
    """Write the checkpoint's SentencePiece model(s) under `directory`; -> their files
    (one joint model, or the source's then the target's)."""
    tokenizer = Tokenizer.from_dict(checkpoint["tokenizer"])
    return tokenizer.save(directory / f"spm-init-{tokenizer.fingerprint}")


def load_weights(model: nn.Module, checkpoint: dict[str, Any], path: str) -> None:
    """Copy the checkpoint's weights into `model` (a `TranslationModule`)."""
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise UserError(f"--init_from {path}: its weights do not fit this model ({err})") from err
