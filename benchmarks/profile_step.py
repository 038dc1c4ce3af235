"""Where a training step's time goes, by phase and by operator, through our CLI and Trainer.

    python benchmarks/profile_step.py                       # the reference model
    python benchmarks/profile_step.py --config configs/multi30k_lstm_luong_additive.yaml --steps 10

The config trains as train_speed.py trains it (`training_child.short_run`: no validation)
for `--warmup` + `--steps` updates, each timed by phase from hooks: module hooks in the
forward, gradient hooks in the backward, Lightning's hooks around them. Phases: data
loading and the loop between steps, encoder, decoder steps, output projection and loss,
the backward of each, optimizer (gradient clipping included). Then `--profiled` more
updates run under torch.profiler (CPU) and its operators are listed by self time.
Output: the two tables, then one JSON line.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, git_state, print_table
from benchmarks.training_child import short_run

CONFIG = REPO / "configs" / "multi30k_gru_luong_additive.yaml"
# Consecutive marks within a step, and the phase between each mark and the previous one.
PHASES = [
    ("encoder", "before the encoder (batch, zero_grad)"),
    ("encoder_done", "encoder"),
    ("output", "decoder steps"),
    ("forward_done", "output projection and loss"),
    ("output_grad", "backward: output projection and loss"),
    ("memory_grad", "backward: decoder steps"),
    ("backward_done", "backward: encoder"),
    ("end", "optimizer (clipping, Adam)"),
]
DATA = "data loading and loop (between steps)"


class PhaseClock(Callback):
    """The time of each phase boundary (`PHASES`) of every training step."""

    def __init__(self, model: nn.Module) -> None:
        self.marks: list[dict[str, float]] = []
        model.encoder.register_forward_pre_hook(lambda *_: self._mark("encoder"))
        model.encoder.register_forward_hook(self._encoder_done)
        losses = model.decoder.losses  # the projection and the loss, fused: no module call

        def timed_losses(outputs: Tensor, *args, **options) -> tuple[Tensor, Tensor]:
            self._mark("output")
            self._on_grad(outputs, "output_grad")  # (B, T, H)
            return losses(outputs, *args, **options)

        model.decoder.losses = timed_losses

    def _mark(self, name: str) -> None:
        self.marks[-1][name] = time.perf_counter()

    def _on_grad(self, tensor: Tensor, name: str) -> None:
        """Mark `name` when the gradient of `tensor` is computed (the last of several)."""
        if tensor.requires_grad:
            tensor.register_hook(lambda grad: self._mark(name))

    def _encoder_done(self, module, inputs, outputs: tuple[Tensor, Tensor]) -> None:
        self._mark("encoder_done")
        for tensor in outputs:  # (B, S, D) states, (B, D) summary
            self._on_grad(tensor, "memory_grad")

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.marks.append({"start": time.perf_counter()})

    def on_before_backward(self, trainer, module, loss) -> None:
        self._mark("forward_done")

    def on_after_backward(self, trainer, module) -> None:
        self._mark("backward_done")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._mark("end")

    def phase_seconds(self, steps: range) -> dict[str, list[float]]:
        """Per phase, its seconds in each of `steps` (each followed by another step)."""
        seconds: dict[str, list[float]] = {name: [] for _, name in PHASES} | {DATA: []}
        for i in steps:
            marks, previous = self.marks[i], "start"
            for mark, name in PHASES:
                seconds[name].append(marks[mark] - marks[previous])
                previous = mark
            seconds[DATA].append(self.marks[i + 1]["start"] - marks["end"])
        return seconds


class Profiled(Callback):
    """torch.profiler (CPU) from the start of step `first` to the start of step `stop`."""

    def __init__(self, first: int, stop: int) -> None:
        self.first, self.stop = first, stop
        self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.first:
            self.profiler.start()
        elif trainer.global_step == self.stop:
            self.profiler.stop()


def phase_table(seconds: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median milliseconds per phase and its share of the median step; prints the table."""
    medians = {name: 1000 * statistics.median(values) for name, values in seconds.items()}
    steps = [sum(parts) for parts in zip(*seconds.values(), strict=True)]
    step_ms = 1000 * statistics.median(steps)
    rows = [[name, f"{ms:.1f}", f"{100 * ms / step_ms:.0f}%"] for name, ms in medians.items()]
    rows.append(["step (median)", f"{step_ms:.1f}", ""])
    print_table(["phase", "median ms", "share"], rows)
    figures = {
        name: {"ms": round(ms, 2), "share": round(ms / step_ms, 3)} for name, ms in medians.items()
    }
    return figures | {"step": {"ms": round(step_ms, 2), "share": 1.0}}


def operator_table(profiler: torch.profiler.profile, steps: int, top: int) -> list[dict]:
    """The `top` operators by self CPU time per step; prints the table."""
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows, figures = [], []
    for event in events[:top]:
        ms = event.self_cpu_time_total / 1000 / steps
        share = event.self_cpu_time_total / total
        rows.append([event.key, f"{ms:.2f}", f"{100 * share:.1f}%", str(event.count // steps)])
        figures.append({"op": event.key, "self_ms": round(ms, 3), "share": round(share, 4)})
    print_table(["operator", "self ms / step", "share", "calls / step"], rows)
    return figures


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "profile_step")
    p.add_argument("--warmup", type=int, default=5, help="updates before timing")
    p.add_argument("--steps", type=int, default=20, help="updates timed by phase")
    p.add_argument("--profiled", type=int, default=3, help="updates under torch.profiler")
    p.add_argument("--top", type=int, default=20, help="operators listed")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    code = git_state()
    first_profiled = args.warmup + args.steps + 1  # the last timed step needs its successor
    stop = first_profiled + args.profiled
    cli = short_run(str(args.config.resolve()), str(args.work_dir.resolve()), stop + 1, [])
    clock, profiled = PhaseClock(cli.model.model), Profiled(first_profiled, stop)
    cli.trainer.callbacks += [clock, profiled]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    print(f"{args.config.name}: {args.steps} steps after {args.warmup}, by phase")
    phases = phase_table(clock.phase_seconds(range(args.warmup, args.warmup + args.steps)))
    print(f"\noperators by self CPU time, {args.profiled} steps under torch.profiler")
    operators = operator_table(profiled.profiler, args.profiled, args.top)
    settings = {"config": args.config.name, "threads": torch.get_num_threads(), "code": code}
    print(json.dumps({"phases": phases, "operators": operators} | settings))


if __name__ == "__main__":
    main()
