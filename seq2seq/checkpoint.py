"""Training checkpoints: read safely, checked before training resumes from one, averaged."""

import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seq2seq.decoder import DEFAULT_SCORE
from seq2seq.errors import UserError, first_line
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)

TRAINING_WEIGHTS = "training_state_dict"  # checkpoint key of the weights training goes on from


def load_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Read a training checkpoint safely (`weights_only=True`); clear errors for bad files.

    `mmap=True` maps the file instead of reading it: tensors are read when touched, so
    what translation leaves alone (the optimizer's state) costs neither time nor memory.
    Only for checkpoints that are not overwritten in place while their tensors are in use.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a PyTorch checkpoint (not a zip archive, or truncated)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
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
    _upgrade_attention(checkpoint["hyper_parameters"])
    return checkpoint


def _upgrade_attention(hparams: dict[str, Any]) -> None:
    """Checkpoints written before `attention_score` existed named "bahdanau" the model that
    is now "luong" with "additive" scores (Bahdanau's score in Luong's architecture); those
    written before the score was recorded with luong (then None: "general") used "general"."""
    if "attention_score" not in hparams and hparams.get("attention") == "bahdanau":
        hparams.update(attention="luong", attention_score="additive")
    elif hparams.get("attention") == "luong" and hparams.get("attention_score") is None:
        hparams["attention_score"] = "general"


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
    states = load_checkpoint(last, mmap=True).get("callbacks", {})  # reads no tensor
    best = [s["best_model_path"] for s in states.values() if s.get("best_model_path")]
    if not best:
        raise UserError(f"--ckpt_path best: {last} records no best checkpoint")
    return Path(best[0])


def check_resumable(
    checkpoint: dict[str, Any], path: Path, tokenizer: Tokenizer, lr: float, ema_decay: float
) -> None:
    """Before training resumes from `checkpoint`: its SentencePiece models must be those
    the data gives (else the token ids change meaning); a run with a moving average of the
    weights resumes with one (its `state_dict` holds the average); a changed learning rate
    is warned about (the optimizer state restored from the checkpoint keeps its own)."""
    saved = Tokenizer.from_dict(checkpoint["tokenizer"])
    if saved.fingerprint != tokenizer.fingerprint:
        raise UserError(
            f"{path} was trained with SentencePiece model(s) {saved.fingerprint}, but the "
            f"data gives {tokenizer.fingerprint} (a changed corpus or vocabulary setting "
            "trains new ones): resume with the data and settings of that run (for a run "
            "begun before data.spm_input_sentence_size defaulted to 500000: 1000000)"
        )
    if TRAINING_WEIGHTS in checkpoint and not ema_decay:
        decay = checkpoint["hyper_parameters"].get("ema_decay")
        raise UserError(
            f"{path} was trained with --model.ema_decay {decay}: resume with a decay above 0 "
            "(or start a new run from its averaged weights with --init_from)"
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
    "attention_score",
    "embed_dim",
    "hidden_size",
    "encoder_layers",
    "decoder_layers",
    "bidirectional",
    "tie_embeddings",
)


def check_architecture(
    saved: dict[str, Any], other: dict[str, Any], *, refusal: str, saved_name: str
) -> None:
    """The `ARCHITECTURE` settings that `saved` (a checkpoint's hyper_parameters) records
    must be `other`'s (model settings, or another checkpoint's hyper_parameters); an
    attention score None is its attention's default. Else UserError: `refusal`, then each
    difference as "model.<name> is <other's>, <saved_name> <saved's>"."""
    saved, other = _resolved(saved), _resolved(other)
    differ = [
        f"model.{name} is {other.get(name)!r}, {saved_name} {saved[name]!r}"
        for name in ARCHITECTURE
        if name in saved and other.get(name) != saved[name]
    ]
    if differ:
        raise UserError(f"{refusal}: " + "; ".join(differ))


def _resolved(hparams: dict[str, Any]) -> dict[str, Any]:
    """`hparams` with the attention score that None stands for."""
    if hparams.get("attention_score") is None and hparams.get("attention") not in (None, "none"):
        return hparams | {"attention_score": DEFAULT_SCORE}
    return hparams


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


# What translation and --init_from read; an averaged checkpoint keeps only these.
AVERAGED_KEYS = (
    "hyper_parameters",
    "state_dict",
    "tokenizer",
    "datamodule_hyper_parameters",
    "pytorch-lightning_version",
    "epoch",
    "global_step",
)


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """The element-wise mean of the checkpoints' weights, as fairseq's average_checkpoints.py.

    All must share the first's architecture, SentencePiece models and weight names and
    shapes. -> the first checkpoint with the mean `state_dict` (floating tensors summed in
    float64, cast back; other tensors the first's), without its training state
    (optimizer, loops, callbacks), and with `averaged_from`, the paths.
    """
    if not paths:
        raise UserError("no checkpoints to average")
    first = load_checkpoint(paths[0])
    sums = {
        key: tensor.to(torch.float64, copy=True) if tensor.is_floating_point() else tensor
        for key, tensor in first["state_dict"].items()
    }
    for path in paths[1:]:
        checkpoint = load_checkpoint(path)
        _check_averageable(checkpoint, path, first, paths[0])
        for key, tensor in checkpoint["state_dict"].items():
            if tensor.is_floating_point():
                sums[key] += tensor.double()
    dtypes = {key: tensor.dtype for key, tensor in first["state_dict"].items()}
    mean = {
        key: (total / len(paths)).to(dtypes[key]) if total.is_floating_point() else total
        for key, total in sums.items()
    }
    kept = {key: first[key] for key in AVERAGED_KEYS if key in first}
    return kept | {"state_dict": mean, "averaged_from": [str(path) for path in paths]}


def _check_averageable(
    checkpoint: dict[str, Any], path: Path, first: dict[str, Any], first_path: Path
) -> None:
    """`checkpoint` (read from `path`) must have the architecture, SentencePiece models and
    weight names and shapes of `first` (read from `first_path`)."""
    check_architecture(
        first["hyper_parameters"],
        checkpoint["hyper_parameters"],
        refusal=f"cannot average {path} with {first_path}",
        saved_name=f"{first_path}'s",
    )
    fingerprint, first_fingerprint = _fingerprint(checkpoint, path), _fingerprint(first, first_path)
    if fingerprint != first_fingerprint:
        raise UserError(
            f"cannot average {path} with {first_path}: its SentencePiece model(s) are "
            f"{fingerprint}, {first_path}'s {first_fingerprint}"
        )
    shapes, first_shapes = (
        {key: tuple(tensor.shape) for key, tensor in c["state_dict"].items()}
        for c in (checkpoint, first)
    )
    names = shapes.keys() | first_shapes.keys()
    differ = sorted(name for name in names if shapes.get(name) != first_shapes.get(name))
    if differ:
        name = differ[0]
        raise UserError(
            f"cannot average {path} with {first_path}: their weights differ in names or "
            f"shapes, first at {name} ({shapes.get(name)} and {first_shapes.get(name)})"
        )


def _fingerprint(checkpoint: dict[str, Any], path: Path) -> str:
    """The fingerprint of the checkpoint's SentencePiece models (UserError naming `path`)."""
    try:
        return Tokenizer.from_dict(checkpoint["tokenizer"]).fingerprint
    except UserError as err:
        raise UserError(f"{path}: {err}") from err


BEST_FILE = re.compile(r"best-epoch\d+-step(?P<step>\d+)-bleu(?P<bleu>\d+(\.\d+)?)\.ckpt")


def run_checkpoints(run_dir: Path, best: int | None, last: int | None) -> list[Path]:
    """The `best` checkpoints of highest validation BLEU (ties: the later), or the `last` of
    highest step, among those that training keeps in `run_dir` (`--checkpoint.save_top_k`;
    named `best-epoch{e}-step{s}-bleu{b}.ckpt`: last.ckpt is not one)."""
    if (best is None) == (last is None):
        raise UserError("give one of --best N and --last N")
    count, flag = (best, "--best") if best is not None else (last, "--last")
    if count < 1:
        raise UserError(f"{flag} must be at least 1, got {count}")
    if not run_dir.is_dir():
        raise UserError(f"checkpoint folder not found: {run_dir}")
    kept = _kept_checkpoints(run_dir)
    if len(kept) < count:
        raise UserError(
            f"{run_dir} holds {len(kept)} checkpoint(s) named best-epoch*-step*-bleu*.ckpt, "
            f"fewer than {flag} {count} asks for"
        )
    if best is not None:
        ranked = sorted(kept, reverse=True)  # by BLEU, then step
    else:
        ranked = sorted(kept, key=lambda found: found[1], reverse=True)
    return [path for _, _, path in ranked[:count]]


def _kept_checkpoints(run_dir: Path) -> list[tuple[float, int, Path]]:
    """(validation BLEU, step, path) of each best-*.ckpt file, read from its name."""
    kept = []
    for path in sorted(run_dir.glob("best-*.ckpt")):
        match = BEST_FILE.fullmatch(path.name)
        if match:
            kept.append((float(match["bleu"]), int(match["step"]), path))
    return kept
