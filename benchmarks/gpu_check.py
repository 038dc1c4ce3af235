"""The GPU check (benchmarks/gpu_check.sh runs it after the CUDA tests): the reference
model trained in each precision, decoding speed, and the CPU's greedy output on the GPU.

    python benchmarks/gpu_check.py                      # on one CUDA device
    python benchmarks/gpu_check.py --device cpu --precisions 32-true --warmup 2 --steps 3 --limit 20

configs/multi30k_gru_luong_additive.yaml trains on Multi30k through scripts/train.py's CLI
and Trainer, in this process, for --warmup + --steps updates in each of --precisions
(32-true, bf16-mixed, 16-mixed: on CUDA, cuDNN's GRU in fp32, bf16 and fp16), each from
the same seed, without validation. Per precision: training tokens/s (non-pad source +
target tokens over the wall time of the timed steps), peak device memory
(`torch.cuda.max_memory_allocated`; none on the CPU), and the BLEU of the trained
weights' greedy translation of the validation set. The first precision's model then
decodes test_2016_flickr greedy and with beam 5 on the device (sentences/s, BLEU), and
greedy on the CPU: the lines that differ are counted (0 expected; rounding may flip a
near tie, which the figure would show). A table, then one JSON line.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import sacrebleu
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common
from benchmarks.training_child import StepClock, short_run
from seq2seq.translator import Translator

CONFIG = common.REPO / "configs" / "multi30k_gru_luong_additive.yaml"
PRECISIONS = ["32-true", "bf16-mixed", "16-mixed"]


def train(precision: str, out: Path, args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """The figures of a short run in `precision`, and its saved checkpoint."""
    data = ["--data.train", args.data_dir / "train", "--data.val", args.data_dir / "val"]
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    options = [*data, "--trainer.precision", precision, "--seed_everything", "1"]
    options += ["--trainer.accelerator", accelerator, "--trainer.devices", "1"]
    cli = short_run(str(CONFIG), str(out), args.warmup + args.steps + 1, list(map(str, options)))
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    common.log(f"training in {precision} on {args.device}: {args.warmup} + {args.steps} updates")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    timed = range(args.warmup, len(clock.starts) - 1)  # step i: its start to step i+1's
    seconds = clock.starts[timed.stop] - clock.starts[timed.start]
    tokens = sum(sum(clock.tokens[i]) for i in timed)
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
    checkpoint = out / "model.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    figures = {"precision": precision, "steps_timed": len(timed), "tok_s": tokens / seconds}
    return figures | {"peak_mem_mib": peak}, checkpoint


def translated(checkpoint: Path, device: str, sources: list[str], refs: list[str], beam: int):
    """The translations of `sources` on `device`, their BLEU, and the decoding seconds."""
    translator = Translator.from_checkpoint(checkpoint, device=device)
    start = time.perf_counter()
    outputs = translator.translate(sources, beam_size=beam)
    seconds = time.perf_counter() - start
    return outputs, round(sacrebleu.corpus_bleu(outputs, [refs]).score, 2), seconds


def report(trained: list[dict], decoded: list[dict], figures: dict[str, Any]) -> None:
    header = ["precision", "steps", "tok/s", "peak MiB", "val BLEU (greedy)"]
    common.print_table(header, list(map(_trained_row, trained)))
    print()
    header = ["device", "search", "sent/s", "test BLEU"]
    rows = [[d["device"], d["search"], f"{d['sent_s']:.1f}", f"{d['bleu']}"] for d in decoded]
    common.print_table(header, rows)
    differ = figures["greedy_lines_differing_cpu_device"]
    print(f"greedy lines that differ between the CPU and {figures['device']}: {differ}")
    common.print_json({"trained": trained, "decoded": decoded} | figures)


def _trained_row(t: dict) -> list[str]:
    peak = "-" if t["peak_mem_mib"] is None else f"{t['peak_mem_mib']:.0f}"
    return [t["precision"], str(t["steps_timed"]), f"{t['tok_s']:.0f}", peak, str(t["val_bleu"])]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=PRECISIONS)
    p.add_argument("--warmup", type=int, default=20, help="updates before timing")
    p.add_argument("--steps", type=int, default=300, help="timed updates")
    p.add_argument("--limit", type=int, help="sentences of the validation and test sets")
    p.add_argument("--work-dir", type=Path, default=common.REPO / ".cache" / "bench" / "gpu_check")
    p.add_argument("--data-dir", type=Path, default=common.MULTI30K)
    return p.parse_args()


def train_each_precision(args: argparse.Namespace) -> tuple[list[dict], list[Path]]:
    """Each precision's figures, with its validation BLEU, and its checkpoint."""
    sources, refs = (
        common.read_lines(args.data_dir / f"val.{x}.gz", args.limit) for x in ["de", "en"]
    )
    trained, checkpoints = [], []
    for precision in args.precisions:
        run, checkpoint = train(precision, args.work_dir / precision, args)
        _, bleu, _ = translated(checkpoint, args.device, sources, refs, beam=1)
        trained.append(run | {"val_bleu": bleu})
        checkpoints.append(checkpoint)
    return trained, checkpoints


def decode_test(checkpoint: Path, args: argparse.Namespace) -> tuple[list[dict], int]:
    """Greedy and beam 5 on the device, greedy on the CPU; -> their figures, and how many
    greedy lines differ between the CPU and the device."""
    test = args.data_dir / "test_2016_flickr"
    sources, refs = (common.read_lines(Path(f"{test}.{x}.gz"), args.limit) for x in ["de", "en"])
    decoded, greedy = [], {}
    for device, beam in dict.fromkeys([(args.device, 1), (args.device, 5), ("cpu", 1)]):
        search = "greedy" if beam == 1 else f"beam {beam}"
        common.log(f"decoding test on {device}, {search}")
        hyps, bleu, seconds = translated(checkpoint, device, sources, refs, beam)
        greedy |= {device: hyps} if beam == 1 else {}
        decoded.append({"device": device, "search": search, "sent_s": len(hyps) / seconds})
        decoded[-1]["bleu"] = bleu
    pairs = zip(greedy[args.device], greedy["cpu"], strict=True)
    return decoded, sum(a != b for a, b in pairs)


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for the CPU-only parts")
    figures: dict[str, Any] = {"code": common.git_state(), "device": args.device}
    if args.device == "cuda":
        figures["device_name"] = torch.cuda.get_device_name()
    trained, checkpoints = train_each_precision(args)
    decoded, differing = decode_test(checkpoints[0], args)
    figures |= {"greedy_lines_differing_cpu_device": differing}
    report(trained, decoded, figures | {"decoded_with": args.precisions[0]})


if __name__ == "__main__":
    main()
