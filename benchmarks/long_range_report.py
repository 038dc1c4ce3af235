"""The report of benchmarks/long_range.py: figures over seeds, the table, the plot of
gradient-flow curves, and the JSON record of each point of the grid."""

import itertools
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.common import print_table

if TYPE_CHECKING:
    from benchmarks.long_range import Run


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of one point of the grid over seeds: means, sd of the accuracies, mean curve."""
    summary: dict[str, Any] = {}
    for key in ["exact_match", "token_accuracy", "steps", "train_s", "loss"]:
        values = [r[key] for r in per_seed]
        summary[key] = statistics.mean(values)
        if key in ("exact_match", "token_accuracy"):
            summary[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    curves = torch.tensor([r["grad_by_distance"] for r in per_seed])  # (seeds, S)
    return summary | {"grad_by_distance": curves.mean(dim=0).tolist()}


def _mean_sd(summary: dict[str, Any], key: str) -> str:
    sd = summary[f"{key}_sd"]
    return f"{summary[key]:.3f}" + ("" if sd is None else f" ± {sd:.3f}")


def print_results(results: dict["Run", dict[str, Any]]) -> None:
    """The table: one row per task, length, cell and attention."""
    header = ["task", "length", "cell", "attention", "exact match", "token acc.", "updates"]
    header += ["train s", "final loss"]
    rows = []
    for run, s in results.items():
        accuracies = [_mean_sd(s, "exact_match"), _mean_sd(s, "token_accuracy")]
        figures = [f"{s['steps']:.0f}", f"{s['train_s']:.1f}", f"{s['loss']:.4f}"]
        rows.append([run.task, str(run.length), run.cell, run.attention, *accuracies, *figures])
    print_table(header, rows)


def plot_curves(
    results: dict["Run", dict[str, Any]],
    tasks: list[str],
    lengths: list[int],
    grad_batch: int,
    path: Path,
) -> None:
    """A grid of gradient-flow curves (tasks down, lengths across), each the mean over
    `grad_batch` sentences, into the PNG `path`."""
    figure = Figure(
        figsize=(3.5 * len(lengths) + 1.5, 3 * len(tasks)), dpi=100, layout="constrained"
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(tasks), len(lengths), squeeze=False)
    colors = {"rnn": "tab:red", "gru": "tab:blue", "lstm": "tab:green"}
    styles = {"none": ":", "bahdanau": "-", "luong": "--"}
    for run, summary in results.items():
        ax = axes[tasks.index(run.task)][lengths.index(run.length)]
        curve = summary["grad_by_distance"]
        label = f"{run.cell}, {run.attention}"
        ax.plot(
            range(len(curve)), curve, styles[run.attention], color=colors[run.cell], label=label
        )
    for (row, task), (column, length) in itertools.product(enumerate(tasks), enumerate(lengths)):
        ax = axes[row][column]
        ax.set_yscale("log")
        ax.set_title(f"{task}, length {length}", fontsize=9)
    figure.supxlabel("distance from the end of the source (tokens)", fontsize=9)
    figure.supylabel(f"mean ‖dL/dh_t‖ over {grad_batch} held-out sentences", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center", fontsize=8)
    figure.savefig(path, format="png")


def _finite(value: float) -> float | None:
    """A float for JSON: 4 significant digits, None for NaN or infinity."""
    return float(f"{value:.4g}") if math.isfinite(value) else None


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    """`figures` with each float, and each float of a list, through `_finite`."""
    out = {}
    for key, value in figures.items():
        if isinstance(value, list):
            out[key] = [_finite(v) for v in value]
        else:
            out[key] = _finite(value) if isinstance(value, float) else value
    return out


def to_json(run: "Run", summary: dict[str, Any], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One point of the grid for the JSON line: its summary, and figures per seed."""
    seeds = [_rounded({k: v for k, v in r.items() if k != "grad_by_distance"}) for r in per_seed]
    return asdict(run) | _rounded(summary) | {"per_seed": seeds}
