"""Attention heat maps: one PNG per sentence, source pieces across, output pieces down."""

import os
from pathlib import Path

import numpy as np

from seq2seq.errors import UserError


def save_attention_plot(
    weights: np.ndarray, src_pieces: list[str], tgt_pieces: list[str], path: Path
) -> None:
    """Write a heat map of (T, S) attention weights to the PNG file `path`, atomically."""
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (len(tgt_pieces), len(src_pieces)):
        raise ValueError(
            f"weights {weights.shape} do not fit {len(tgt_pieces)}x{len(src_pieces)} labels"
        )
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise UserError("attention plots need matplotlib: pip install 'seq2seq[plot]'") from err
    rows, cols = weights.shape
    figure = Figure(figsize=(max(4.0, 0.32 * cols + 2.0), max(3.0, 0.32 * rows + 1.5)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(cols), labels=src_pieces, rotation=90, fontsize=8)
    axes.set_yticks(range(rows), labels=tgt_pieces, fontsize=8)
    axes.set_xlabel("source")
    axes.set_ylabel("output")
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    figure.savefig(tmp, format="png")
    tmp.replace(path)
