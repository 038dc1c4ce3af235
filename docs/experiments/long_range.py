"""Long-range dependency tasks: which cells and attention learn to copy, reverse and sort?

    python docs/experiments/long_range.py --jobs 2   # the full grid: 1 h 53 min on 2 cores
    python docs/experiments/long_range.py --quick    # a smoke run: one task, lengths 10 and 25

Synthetic tasks, generated from a seed over 20 symbols (0-9, a-j), every source exactly
L symbols long for each L of --lengths: `copy` (the output is the input), `reverse`, and
`sort` (the input sorted: its first output symbol depends on every input symbol). Each
cell (rnn, gru, lstm) with each attention (none, bahdanau, luong) trains from the same
seed on the same fresh random batches for the same budget (--steps updates, or --seconds
of wall time): Adam, teacher forcing, no label smoothing, gradient norm clipped at 1.0.
Greedy search on a held-out set of the same task and length then gives exact-match and
token accuracy, and `seq2seq.gradients` the norm of the loss's gradient with respect to
each encoder state by distance from the end of the source, on a held-out batch. Prints a
table, writes a PNG grid of those curves, then a JSON last line. Each model's figures are
kept in --output-dir/runs and reused by a later invocation with the same settings, so a
grid can be run in pieces; --jobs trains several models at once, one process each (with
one thread each, the figures equal one process's). The model (`MODEL`): embeddings 64,
hidden 128, one layer, a bidirectional encoder, no dropout (the data never repeat);
batches of 64; greedy search's default length limit 1.2 L + 5. What the grid shows:
docs/long_range.md.
"""

import argparse
import itertools
import json
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import REPO, cpu_snapshot, git_state, log, print_table
from seq2seq.gradients import by_distance_from_end, encoder_state_gradient_norms
from seq2seq.loss import smoothed_cross_entropy
from seq2seq.model import Seq2Seq
from seq2seq.search import greedy_search
from seq2seq.textfiles import atomic_output

SYMBOLS = "0123456789abcdefghij"
PAD, BOS, EOS = 0, 2, 3  # Seq2Seq's defaults; id 1 (unknown) never occurs
FIRST = 4  # the id of SYMBOLS[0]
VOCAB = FIRST + len(SYMBOLS)
TASKS: dict[str, Callable[[Tensor], Tensor]] = {
    "copy": lambda src: src.clone(),
    "reverse": lambda src: src.flip(1),
    "sort": lambda src: src.sort(dim=1).values,
}
CELLS = ["rnn", "gru", "lstm"]
ATTENTIONS = ["none", "bahdanau", "luong"]
FULL = {"tasks": list(TASKS), "lengths": [10, 25, 50, 100], "steps": 500, "test_size": 500}
QUICK = {"tasks": ["reverse"], "lengths": [10, 25], "steps": 40, "test_size": 64}
MODEL = {"embed_dim": 64, "hidden_size": 128, "encoder_layers": 1, "decoder_layers": 1}
MODEL |= {"bidirectional": True, "dropout": 0.0}
CLIP = 1.0
GRAD_BATCH = 32  # held-out sentences in the gradient-flow curve


def from_text(text: str) -> list[int]:
    """Symbols -> ids."""
    return [FIRST + SYMBOLS.index(symbol) for symbol in text]


def to_text(ids: list[int]) -> str:
    """Ids -> symbols (`?` for an id that is not a symbol)."""
    return "".join(SYMBOLS[i - FIRST] if FIRST <= i < VOCAB else "?" for i in ids)


def make_pairs(
    task: str, length: int, count: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """`count` random sources of `length` symbols and their targets: (N, L) ids each."""
    src = torch.randint(FIRST, VOCAB, (count, length), generator=generator)
    return src, TASKS[task](src)


def seeded(seed: int, stream: int) -> torch.Generator:
    """The generator of `stream` (0: training batches, 1: held-out set) for `seed`."""
    return torch.Generator().manual_seed(seed * 1000 + stream)


def teacher_forced(src: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, L) sources and targets -> (B,) source lengths, (B, L + 1) BOS + target, and
    (B, L + 1) target + EOS."""
    lengths = torch.full((src.size(0),), src.size(1))
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt], dim=1)
    tgt_out = torch.cat([tgt, torch.full_like(tgt[:, :1], EOS)], dim=1)
    return lengths, tgt_in, tgt_out


def token_loss(model: Seq2Seq, src: Tensor, tgt: Tensor) -> Tensor:
    """Mean teacher-forced NLL per target token, EOS included."""
    lengths, tgt_in, tgt_out = teacher_forced(src, tgt)
    logits = model(src, lengths, tgt_in)  # (B, L + 1, V)
    _, nll = smoothed_cross_entropy(
        logits.flatten(0, 1), tgt_out.flatten(), smoothing=0.0, pad_id=PAD
    )
    return nll / tgt_out.numel()


@dataclass(frozen=True)
class Run:
    """One point of the grid: a model for one task and length."""

    task: str
    length: int
    cell: str
    attention: str


def train(model: Seq2Seq, run: Run, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Train for the budget of `args` on fresh batches; -> updates, seconds, and the mean
    loss of the last 20 updates."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator, losses = seeded(seed, 0), []
    model.train()
    start = time.perf_counter()
    while _budget_left(len(losses), time.perf_counter() - start, args):
        loss = token_loss(model, *make_pairs(run.task, run.length, args.batch_size, generator))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - start
    last = statistics.mean(losses[-20:]) if losses else math.nan
    return {"steps": len(losses), "train_s": train_s, "loss": last}


def _budget_left(steps: int, seconds: float, args: argparse.Namespace) -> bool:
    """Whether training may go on after `steps` updates in `seconds`."""
    return seconds < args.seconds if args.seconds is not None else steps < args.steps


def accuracy(hypotheses: list[list[int]], targets: list[list[int]]) -> dict[str, float]:
    """Exact-match rate, and token accuracy: symbols right at their position over the
    longer of output and target, summed over sentences."""
    pairs = list(zip(hypotheses, targets, strict=True))
    right = sum(sum(a == b for a, b in zip(h, t, strict=False)) for h, t in pairs)
    total = sum(max(len(h), len(t)) for h, t in pairs)
    exact = sum(h == t for h, t in pairs) / len(pairs)
    return {"exact_match": exact, "token_accuracy": right / total}


def evaluate(model: Seq2Seq, run: Run, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Greedy accuracy on the held-out set; gradient-flow curve on its first sentences."""
    model.eval()
    src, tgt = make_pairs(run.task, run.length, args.test_size, seeded(seed, 1))
    lengths = torch.full((src.size(0),), run.length)
    hypotheses = []
    for rows in torch.arange(len(src)).split(args.batch_size):
        hypotheses += [h.tokens for h in greedy_search(model, src[rows], lengths[rows])]
    scores = accuracy(hypotheses, tgt.tolist())
    src, tgt = src[:GRAD_BATCH], tgt[:GRAD_BATCH]
    norms = encoder_state_gradient_norms(model, src, *teacher_forced(src, tgt))  # (B, S)
    curve = by_distance_from_end(norms, lengths[:GRAD_BATCH])  # (S,)
    return scores | {"grad_by_distance": curve.tolist()}


def measure(run: Run, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Build, train and evaluate one model; -> its figures, and others' CPU seconds meanwhile."""
    torch.manual_seed(seed)
    model = Seq2Seq(VOCAB, VOCAB, cell=run.cell, attention=run.attention, **MODEL)
    start = _cpu_now()
    trained = train(model, run, seed, args)
    scores = evaluate(model, run, seed, args)
    return trained | scores | {"others_cpu_s": _others_cpu_since(start)}


def _cpu_now() -> tuple[float, float]:
    """CPU seconds so far of the whole machine, and of this process with its finished
    children (the workers of --jobs, once joined)."""
    machine, children = cpu_snapshot()
    return machine, time.process_time() + children


def _others_cpu_since(start: tuple[float, float]) -> float:
    """CPU seconds that other processes took since `start`: 0 on an idle machine."""
    machine, own = _cpu_now()
    return round(max(machine - start[0] - (own - start[1]), 0.0), 1)


def measure_all(points: list[tuple[Run, int]], args: argparse.Namespace) -> dict:
    """(run, seed) -> its figures: kept ones from --output-dir/runs, the others measured
    (costliest first, in --jobs worker processes) and kept."""
    figures = {point: kept for point in points if (kept := _kept(point, args)) is not None}
    todo = sorted(
        set(points) - set(figures), key=lambda p: (-p[0].length, p[0].attention == "none")
    )
    log(f"{len(figures)} of {len(points)} models kept from {args.output_dir / 'runs'}")

    def finished(point: tuple[Run, int], measured: dict[str, Any]) -> None:
        figures[point] = measured
        _keep(point, measured, args)
        done = len(figures)
        log(f"{done}/{len(points)} {asdict(point[0])} seed {point[1]}: {measured['exact_match']}")

    if args.jobs == 1:
        for point in todo:
            finished(point, measure(*point, args))
        return figures
    spawn = multiprocessing.get_context("spawn")  # no fork of a process with OpenMP threads
    with ProcessPoolExecutor(
        args.jobs, mp_context=spawn, initializer=torch.set_num_threads, initargs=(args.threads,)
    ) as pool:
        futures = {pool.submit(measure, *point, args): point for point in todo}
        for future in as_completed(futures):
            finished(futures[future], future.result())
    return figures


def _kept_path(point: tuple[Run, int], args: argparse.Namespace) -> Path:
    run, seed = point
    name = f"{run.task}-L{run.length}-{run.cell}-{run.attention}-seed{seed}.json"
    return args.output_dir / "runs" / name


def _settings_key(args: argparse.Namespace) -> dict[str, Any]:
    """What a model's figures depend on (the thread count too, under a time budget)."""
    key = {name: getattr(args, name) for name in ["steps", "seconds", "batch_size", "lr"]}
    key |= {"test_size": args.test_size, "model": MODEL, "clip": CLIP, "grad_batch": GRAD_BATCH}
    return key | ({"threads": args.threads} if args.seconds is not None else {})


def _kept(point: tuple[Run, int], args: argparse.Namespace) -> dict[str, Any] | None:
    """The figures kept for `point` under the same settings, else None."""
    path = _kept_path(point, args)
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record["figures"] if record["settings"] == _settings_key(args) else None


def _keep(point: tuple[Run, int], figures: dict[str, Any], args: argparse.Namespace) -> None:
    path = _kept_path(point, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"settings": _settings_key(args), "code": args.code, "figures": figures}
    with atomic_output(str(path)) as handle:
        json.dump(record, handle)


# -- report -----------------------------------------------------------------------------------


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


def print_results(results: dict[Run, dict[str, Any]]) -> None:
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
    results: dict[Run, dict[str, Any]],
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


def to_json(run: Run, summary: dict[str, Any], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One point of the grid for the JSON line: its summary, and figures per seed."""
    seeds = [_rounded({k: v for k, v in r.items() if k != "grad_by_distance"}) for r in per_seed]
    return asdict(run) | _rounded(summary) | {"per_seed": seeds}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), help=f"default {FULL['tasks']}")
    p.add_argument("--lengths", type=int, nargs="+", help=f"default {FULL['lengths']}")
    p.add_argument("--cells", nargs="+", choices=CELLS, default=CELLS)
    p.add_argument("--attentions", nargs="+", choices=ATTENTIONS, default=ATTENTIONS)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help=f"updates per model (default {FULL['steps']})")
    budget.add_argument("--seconds", type=float, help="training wall seconds per model instead")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--test-size", type=int, help=f"held-out sequences (default {FULL['test_size']})"
    )
    p.add_argument("--output-dir", type=Path, default=REPO / ".cache" / "bench" / "long_range")
    p.add_argument("--quick", action="store_true", help=f"defaults {QUICK} instead")
    p.add_argument("--jobs", type=int, default=1, help="models trained at once, one process each")
    p.add_argument("--threads", type=int, help="torch threads per job (default: torch's / jobs)")
    args = p.parse_args(argv)
    args.threads = args.threads or max(torch.get_num_threads() // args.jobs, 1)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None and not (key == "steps" and args.seconds is not None):
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.code = git_state()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.jobs == 1:
        torch.set_num_threads(args.threads)
    log(f"{args.jobs} job(s) of {args.threads} torch thread(s)")
    for task in args.tasks:
        src, tgt = make_pairs(task, 10, 1, seeded(0, 0))
        log(f"{task}: {to_text(src[0].tolist())} -> {to_text(tgt[0].tolist())}")
    start, wall = _cpu_now(), time.perf_counter()
    grid = [
        Run(*p) for p in itertools.product(args.tasks, args.lengths, args.cells, args.attentions)
    ]
    figures = measure_all([(run, seed) for run in grid for seed in args.seeds], args)
    results, records = {}, []
    for run in grid:
        per_seed = [figures[run, seed] for seed in args.seeds]
        results[run] = summarize(per_seed)
        records.append(to_json(run, results[run], per_seed))
    print_results(results)
    plot = args.output_dir / "gradient_flow.png"
    plot_curves(results, args.tasks, args.lengths, GRAD_BATCH, plot)
    others = _others_cpu_since(start)
    jobs = f"{args.jobs} job(s) of {args.threads} torch thread(s)"
    print(f"{jobs}; other processes took {others} CPU s; plot: {plot}")
    settings = vars(args) | {"output_dir": str(args.output_dir)}
    settings |= {"model": MODEL, "clip": CLIP, "grad_batch": GRAD_BATCH, "symbols": SYMBOLS}
    summary = {"settings": settings, "others_cpu_s": others, "plot": str(plot)}
    summary |= {"wall_s": round(time.perf_counter() - wall, 1), "code": args.code}
    print(json.dumps(summary | {"results": records}))


if __name__ == "__main__":
    main()
