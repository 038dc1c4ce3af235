"""Plots (matplotlib, the optional extra `plot`): attention heat maps, gradient flow through
time, training curves, a score against training minutes over seeds. Each is written to a
PNG file atomically."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seq2seq.errors import UserError
from seq2seq.textfiles import atomic_binary_output

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Series = tuple[np.ndarray, np.ndarray]  # (steps, values)
# Panels of `save_metrics_plot`: title, the metrics drawn (solid, then dashed), y scale.
METRIC_PANELS = (
    ("loss (train solid, validation dashed)", ("train_loss", "val_loss"), "linear"),
    ("validation BLEU", ("val_bleu",), "linear"),
    ("learning rate (LearningRateMonitor)", ("lr",), "log"),
    ("gradient norm (before clipping)", ("grad_norm",), "log"),
)
GRADIENT_FLOW_PANEL = (
    "gradient flow: far / near (GradientFlow)",
    ("grad_flow/far_over_near",),
    "log",
)


def save_attention_plot(
    weights: np.ndarray, src_pieces: list[str], tgt_pieces: list[str], path: Path
) -> None:
    """Write a heat map of (T, S) attention weights to the PNG file `path`."""
    weights = np.asarray(weights, dtype=np.float32)
    if weights.shape != (len(tgt_pieces), len(src_pieces)):
        raise ValueError(
            f"weights {weights.shape} do not fit {len(tgt_pieces)}x{len(src_pieces)} labels"
        )
    rows, cols = weights.shape
    figure = _figure(max(4.0, 0.32 * cols + 2.0), max(3.0, 0.32 * rows + 1.5))
    axes = figure.subplots()
    image = axes.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(cols), labels=src_pieces, rotation=90, fontsize=8)
    axes.set_yticks(range(rows), labels=tgt_pieces, fontsize=8)
    axes.set_xlabel("source")
    axes.set_ylabel("output")
    figure.colorbar(image, ax=axes, fraction=0.04)
    _save(figure, path)


def save_gradient_flow_plot(curves: Mapping[str, np.ndarray], path: Path) -> None:
    """One line per label: the mean gradient norm at each distance from the end of the
    source (`seq2seq.gradients.by_distance_from_end`), on a log scale."""
    figure = _figure(7.0, 4.5)
    axes = figure.subplots()
    for label, curve in curves.items():
        axes.plot(np.arange(len(curve)), curve, marker=".", label=label)
    axes.set_yscale("log")
    axes.set_xlabel("distance from the end of the source (tokens)")
    axes.set_ylabel("mean |dL/dh_t|")
    axes.set_title("gradient of the loss reaching each encoder state")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    _save(figure, path)


def save_metrics_plot(runs: Mapping[str, Mapping[str, Series]], path: Path) -> None:
    """Training curves against the step, one colour per run: the `METRIC_PANELS`, and the
    gradient flow ratio when a run logged it. `runs[label][metric]` = (steps, values)."""
    logged = {metric for metrics in runs.values() for metric in metrics}
    panels = METRIC_PANELS + ((GRADIENT_FLOW_PANEL,) if GRADIENT_FLOW_PANEL[1][0] in logged else ())
    rows = (len(panels) + 1) // 2
    height = 3.4 * rows
    figure = _figure(11.0, height)
    grid = figure.subplots(rows, 2, squeeze=False, sharex=True).flatten()  # steps align
    for axes, (title, metrics, scale) in zip(grid, panels, strict=False):
        _draw_panel(axes, runs, metrics, scale)
        axes.set_title(title, fontsize=10)
    for axes in grid[len(panels) :]:
        axes.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{i}", label=label) for i, label in enumerate(runs)]
    figure.legend(handles=handles, loc="upper center", ncol=min(len(runs), 4), fontsize=8)
    _save(figure, path, top=1 - 0.4 / height)  # 0.4 inch for the legend


def mean_and_sd(curves: Sequence[Series], points: int = 200) -> tuple[np.ndarray, ...]:
    """The runs' `curves` ((x, y), x increasing) linearly interpolated at `points` x from
    the latest first x to the earliest last x, where every run has a value -> (x, mean,
    sample sd; zeros for one run)."""
    start, end = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if start > end:
        raise ValueError(f"the curves share no x: from {start:g} to {end:g}")
    grid = np.linspace(start, end, points)
    values = np.stack([np.interp(grid, x, y) for x, y in curves])  # (runs, points)
    sd = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(points)
    return grid, values.mean(axis=0), sd


def save_score_over_time_plot(
    sides: Mapping[str, Sequence[Series]], path: Path, ylabel: str, xlabel: str
) -> None:
    """One colour per side: each run's curve thin, the mean over its runs in a band of
    ± one sd where they overlap (`mean_and_sd`). `sides[label]` = the runs' (x, y)."""
    figure = _figure(7.5, 4.5)
    axes = figure.subplots()
    for index, (label, curves) in enumerate(sides.items()):
        colour = f"C{index}"
        for x, y in curves:
            axes.plot(x, y, ".-", color=colour, alpha=0.35, linewidth=0.8, markersize=4)
        grid, mean, sd = mean_and_sd(curves)
        axes.plot(grid, mean, color=colour, linewidth=2, label=f"{label} ({len(curves)} runs)")
        axes.fill_between(grid, mean - sd, mean + sd, color=colour, alpha=0.2, linewidth=0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=9)
    _save(figure, path)


def check_labels(labels: list[str], items: list[str], what: str) -> None:
    """One legend label per item (`what` names them in the error), all different."""
    if len(labels) != len(items):
        raise UserError(f"{len(labels)} --labels for {len(items)} {what}")
    if len(set(labels)) != len(labels):
        raise UserError(f"the legend labels must differ, got {' '.join(labels)}: give --labels")


def _draw_panel(
    axes: "Axes", runs: Mapping[str, Mapping[str, Series]], metrics: tuple[str, ...], scale: str
) -> None:
    """Each run's `metrics` (solid, then dashed) in its colour; a note where none is logged."""
    drawn = False
    for index, series in enumerate(runs.values()):
        for style, metric in zip(("-", "--"), metrics, strict=False):
            if metric in series and len(series[metric][0]):
                steps, values = series[metric]
                marker = "o" if len(steps) < 30 else None
                axes.plot(steps, values, style, color=f"C{index}", marker=marker)
                drawn = True
    if drawn:
        axes.set_yscale(scale)
        axes.grid(True, alpha=0.3)
    else:
        axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
    axes.set_xlabel("step")
    axes.xaxis.set_tick_params(labelbottom=True)  # on every panel, not only the bottom row


def _figure(width: float, height: float) -> "Figure":
    """A matplotlib Figure with an Agg canvas (no display needed); UserError without it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise UserError("plots need matplotlib: pip install 'seq2seq[plot]'") from err
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: "Figure", path: Path, top: float = 1.0) -> None:
    """Lay out `figure` below `top` (a fraction of its height) and write it to the PNG file
    `path` through a temporary file."""
    figure.tight_layout(rect=(0, 0, 1, top))
    with atomic_binary_output(str(path)) as handle:
        figure.savefig(handle, format="png")
