"""What GET /v1/model says: read from the checkpoints, without building their models."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seq2seq.checkpoint import load_checkpoint
from seq2seq.server.schemas import CheckpointInfo, ModelInfo, Settings

ARCHITECTURE = (
    "cell",
    "attention",
    "embed_dim",
    "hidden_size",
    "encoder_layers",
    "decoder_layers",
    "bidirectional",
    "src_vocab_size",
    "tgt_vocab_size",
)


def describe_model(paths: list[str], settings: Settings, name: str | None = None) -> ModelInfo:
    """The model of `paths` (an ensemble when several); `name` defaults to theirs."""
    loaded = [(load_checkpoint(path, mmap=True), path) for path in paths]
    return describe_loaded(loaded, settings, name)


def describe_loaded(
    loaded: Sequence[tuple[dict[str, Any], str | Path]], settings: Settings, name: str | None = None
) -> ModelInfo:
    """The model of (checkpoint, its path) pairs read by `load_checkpoint` (an ensemble when
    several), as `describe_model`: the server reads each checkpoint once, for this and for
    `Translator.from_all_loaded`."""
    members = [describe_checkpoint(checkpoint, path) for checkpoint, path in loaded]
    first = members[0]
    return ModelInfo(
        name=name or "+".join(default_name(path) for _, path in loaded),
        source_language=first.source_language,
        target_language=first.target_language,
        has_attention=first.attention != "none",  # an ensemble's is its first model's
        checkpoints=members,
        settings=settings,
    )


def describe_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> CheckpointInfo:
    hparams = checkpoint["hyper_parameters"]
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    metric, score = best_validation(checkpoint.get("callbacks") or {})
    return CheckpointInfo(
        path=str(path),
        **{key: hparams[key] for key in ARCHITECTURE},
        attention_score=hparams.get("attention_score"),
        parameters=sum(tensor.numel() for tensor in checkpoint["state_dict"].values()),
        source_language=data.get("src_lang"),
        target_language=data.get("tgt_lang"),
        max_source_pieces=data.get("max_len"),
        validation_metric=metric,
        validation_score=score,
        step=checkpoint.get("global_step"),
    )


def best_validation(callbacks: dict[str, Any]) -> tuple[str | None, float | None]:
    """The monitored metric and best score that Lightning's ModelCheckpoint recorded."""
    for key, state in callbacks.items():
        if key.startswith("ModelCheckpoint") and state.get("best_model_score") is not None:
            return state.get("monitor"), float(state["best_model_score"])
    return None, None


def default_name(path: str | Path) -> str:
    """`RUN/best` for `RUN/checkpoints/best.ckpt`, else the file name without suffix."""
    path = Path(path)
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.stem}"
    return path.stem
