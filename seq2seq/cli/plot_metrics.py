"""`scripts/plot_metrics.py`: training curves from runs' CSV logs, runs side by side.

Reads each RUN_DIR/**/metrics.csv that Lightning's CSVLogger wrote (files in order of
writing: a resumed run's later values replace those of the steps it repeats) and draws
training and validation loss, validation BLEU, learning rate (logged with
--trainer.callbacks+=LearningRateMonitor) and gradient norm against the step, one colour
per run; with GradientFlow's logs, its far/near ratio too.
"""

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from seq2seq.errors import ArgumentParser, UserError, exit_on_user_error
from seq2seq.plots import Series, check_labels, save_metrics_plot

LR_PREFIX = "lr-"  # LearningRateMonitor's columns: lr-Adam, lr-AdamW, ...


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n", 1)[0].split(":", 1)[1])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training output folders")
    parser.add_argument("--output", required=True, metavar="FILE.png", help="the PNG to write")
    parser.add_argument("--labels", nargs="+", help="one per run (default: the folders)")
    return parser


def read_run(run_dir: Path) -> dict[str, Series]:
    """Every metric of a run's CSV logs -> (steps, values), by step; the learning rate as "lr"."""
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    files = sorted(run_dir.glob("**/metrics.csv"), key=lambda p: (p.stat().st_mtime_ns, p))
    if not files:
        raise UserError(
            f"{run_dir} holds no metrics.csv: train with "
            "--trainer.logger lightning.pytorch.loggers.CSVLogger"
        )
    by_step: dict[str, dict[int, float]] = {}
    for path in files:
        for metric, step, value in _csv_values(path):
            by_step.setdefault(metric, {})[step] = value
    return {
        metric: (np.array(sorted(values)), np.array([values[s] for s in sorted(values)]))
        for metric, values in by_step.items()
    }


def _csv_values(path: Path) -> list[tuple[str, int, float]]:
    """(metric, step, value) for each filled cell of a CSVLogger file."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "step" not in rows[0]:
        raise UserError(f"{path}: no step column, not a Lightning CSVLogger file")
    found = []
    for number, row in enumerate(rows, start=2):
        for column, cell in row.items():
            if column in ("step", "epoch") or not cell:
                continue
            try:
                value, step = float(cell), int(row["step"])
            except (TypeError, ValueError):
                raise UserError(f"{path}:{number}: {column} is {cell!r}, not a number") from None
            if math.isfinite(value):
                found.append((_metric_name(column), step, value))
    return found


def _metric_name(column: str) -> str:
    return "lr" if column.startswith(LR_PREFIX) else column


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        labels = args.labels or args.run_dirs
        check_labels(labels, args.run_dirs, "run folders")
        output = Path(args.output)
        if not output.parent.is_dir():
            raise UserError(f"cannot write {output}: directory {output.parent} does not exist")
        runs = {
            label: read_run(Path(run)) for label, run in zip(labels, args.run_dirs, strict=True)
        }
        save_metrics_plot(runs, output)
    except UserError as err:
        exit_on_user_error(err)
    print(f"wrote {output}: {len(runs)} run(s)")
