"""Training throughput of the Multi30k configs, against the hardware and JoeyNMT 2.3.0.

    python benchmarks/train_speed.py                       # our four Multi30k configs
    python benchmarks/train_speed.py --compare-joeynmt     # ... and JoeyNMT, GRU + Bahdanau
    python benchmarks/train_speed.py --configs configs/multi30k_gru_bahdanau.yaml --steps 20

Each config trains in a fresh process through `scripts/train.py`'s own CLI and
Trainer (optimizer, clipping and logging included; no validation) for `--warmup`
then `--steps` updates. Throughput is non-pad source + target tokens (target with
EOS) over the wall time from one batch's start to the next: the median over the
timed steps, and their total over their sum. Peak RSS is the process's `ru_maxrss`.

Roofline: a large fp32 matmul timed here on the same threads gives the attainable
FLOP/s; `FlopCounterMode` counts the FLOPs of one forward + backward of a training
batch; achieved FLOP/s = tokens/s × FLOPs per token, and its share of the matmul
rate is the roofline fraction.

JoeyNMT (`--compare-joeynmt`) is installed at run time into
`.cache/bench/joeynmt-venv`, never vendored, and trains the GRU + Bahdanau
architecture with our SentencePiece model, dropout, label smoothing, Adam and
clipping, on token batches that hold as many real target tokens as ours (its
batches count padding and are not bucketed; see benchmarks/joeynmt_peer.py). It
logs target tokens/s every 10 updates; the median after the first interval is
compared with ours counted the same way (non-pad target tokens with EOS). Output:
a table, then one JSON line with every figure.
"""

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import MULTI30K, REPO, child_env, git_state, log, print_table, run_measured
from benchmarks.joeynmt_peer import ensure_joeynmt, joey_config, prepare_joeynmt, train_joeynmt

CONFIGS = [
    REPO / "configs" / f"multi30k_{name}.yaml"
    for name in ("gru_bahdanau", "gru_noattn", "lstm_bahdanau", "lstm_noattn")
]
TARGETS = {"joeynmt_ratio": 2.5, "roofline_fraction": 0.40}  # on GRU + Bahdanau
JOEY_LOG_EVERY = 10  # updates between its "Tokens per Sec" lines


# -- ours, in a child process -----------------------------------------------------------------


def measure_child(config: str, warmup: str, steps: str, out_dir: str) -> None:
    """Train `config` for warmup + steps updates; print the figures as one JSON line."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.training_child import StepClock, short_run
    from seq2seq.loss import smoothed_cross_entropy

    cli = short_run(config, out_dir, int(warmup) + int(steps) + 1, [])
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    # Step i lasts from its start to step i+1's: data loading, forward, backward, optimizer.
    timed = range(int(warmup), len(clock.starts) - 1)
    seconds = [clock.starts[i + 1] - clock.starts[i] for i in timed]
    both = [sum(clock.tokens[i]) for i in timed]
    target = [clock.tokens[i][1] for i in timed]
    batch = clock.last_batch
    model = cli.model.model.train()
    with FlopCounterMode(display=False, custom_mapping=ONEDNN_RNN_FLOPS) as counter:
        logits = model(batch["src"], batch["src_lengths"], batch["tgt_in"])
        loss, _ = smoothed_cross_entropy(
            logits.flatten(0, 1),
            batch["tgt_out"].flatten(),
            smoothing=cli.model.hparams.label_smoothing,
            pad_id=model.pad_id,
        )
        loss.backward()
    figures = {
        "steps_timed": len(seconds),
        "tok_s_median": statistics.median(n / s for n, s in zip(both, seconds, strict=True)),
        "tok_s_total": sum(both) / sum(seconds),
        "tgt_tok_s_median": statistics.median(n / s for n, s in zip(target, seconds, strict=True)),
        "step_s_median": statistics.median(seconds),
        "tokens_per_batch_median": statistics.median(both),
        "flops_per_token": counter.get_total_flops() / sum(clock.tokens[-1]),
    }
    Path(out_dir, "spm.model").write_bytes(cli.datamodule.tokenizer.to_dict()["src"])
    hparams = {"model": dict(cli.model.hparams), "data": dict(cli.datamodule.hparams)}
    Path(out_dir, "hparams.json").write_text(json.dumps(hparams, default=str))
    print(json.dumps(figures))


def _onednn_rnn_flops(input_shape, w_ih_shape, w_hh_shape, *args, **kwargs) -> int:
    """FLOPs of `aten.mkldnn_rnn_layer`, PyTorch's CPU LSTM layer (oneDNN), which
    FlopCounterMode does not know: both projections of every step, 2 per multiply-add."""
    steps, batch = input_shape[0], input_shape[1]  # (S, B, I)
    return 2 * steps * batch * w_ih_shape[0] * (w_ih_shape[1] + w_hh_shape[1])


ONEDNN_RNN_FLOPS = {
    torch.ops.aten.mkldnn_rnn_layer: _onednn_rnn_flops,
    # the backward: gradients of the inputs and of the weights, twice the forward
    torch.ops.aten.mkldnn_rnn_layer_backward: lambda *a, **k: 2 * _onednn_rnn_flops(*a, **k),
}


def measure_ours(config: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = work / config.stem
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "_measure", config, args.warmup, args.steps, out]
    log(f"training {config.name}: {args.warmup} warm-up + {args.steps} timed updates")
    env = child_env(args.threads, ours=True)
    measured = run_measured(cmd, out / "train.log", stdout=out / "result.json", env=env)
    last_line = (out / "result.json").read_text().strip().splitlines()[-1]
    return json.loads(last_line) | measured


# -- the hardware -----------------------------------------------------------------------------


def matmul_flops(threads: int, size: int = 2048, repeats: int = 15) -> float:
    """Median FLOP/s of a (size × size) @ (size × size) fp32 matmul on `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


# -- JoeyNMT ------------------------------------------------------------------------------------


def measure_joeynmt(work: Path, spm_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train JoeyNMT for a fixed number of updates; its logged target tokens/s, median."""
    python = ensure_joeynmt()
    hparams = json.loads((spm_file.parent / "hparams.json").read_text())
    hp, data_hp = hparams["model"], hparams["data"]
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    voc_file, batching = prepare_joeynmt(args.data_dir, sp, work, data_hp)
    cfg = joey_config(hp, data_hp, work, spm_file, voc_file, batching)
    updates = JOEY_LOG_EVERY * (args.joeynmt_logs + 1)
    cfg["training"] |= {"updates": updates, "logging_freq": JOEY_LOG_EVERY}
    cfg["training"]["validation_freq"] = updates + JOEY_LOG_EVERY  # none while timed
    start = time.perf_counter()
    trained = train_joeynmt(python, cfg, work, None, child_env(args.threads, ours=False))
    wall = time.perf_counter() - start
    lines = (work / "joeynmt" / "train.log").read_text(errors="replace")
    rates = [float(x) for x in re.findall(r"Tokens per Sec:\s+([\d.]+)", lines)]
    if len(rates) < 2:
        raise RuntimeError(f"JoeyNMT logged {len(rates)} throughput lines; see its train.log")
    return {
        "tgt_tok_s_median": statistics.median(rates[1:]),  # the first interval warms up
        "tgt_tok_s_all": rates,
        "updates": trained["steps"],
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(trained["peak_rss_mib"], 1),
        "batching": batching,
    }


# -- report -----------------------------------------------------------------------------------


def report(ours: dict[str, dict], joey: dict | None, matmul: float, extra: dict) -> None:
    """The table, the verdicts, and last one JSON line."""
    header = [
        "config",
        "tok/s (src+tgt)",
        "tgt tok/s",
        "MFLOP/tok",
        "GFLOP/s",
        "roofline",
        "RSS MiB",
    ]
    rows = []
    for name, r in ours.items():
        r["gflop_s"] = r["tok_s_median"] * r["flops_per_token"] / 1e9
        r["roofline_fraction"] = r["gflop_s"] * 1e9 / matmul
        rows.append(
            [
                name,
                f"{r['tok_s_median']:.0f}",
                f"{r['tgt_tok_s_median']:.0f}",
                f"{r['flops_per_token'] / 1e6:.2f}",
                f"{r['gflop_s']:.1f}",
                f"{100 * r['roofline_fraction']:.0f}%",
                f"{r['peak_rss_mib']:.0f}",
            ]
        )
    if joey is not None:
        rss = joey["peak_rss_mib"]
        rows.append(
            [
                "joeynmt gru_bahdanau",
                "",
                f"{joey['tgt_tok_s_median']:.0f}",
                "",
                "",
                "",
                f"{rss:.0f}",
            ]
        )
    print_table(header, rows)
    print(f"fp32 matmul, {extra['threads']} threads: {matmul / 1e9:.1f} GFLOP/s")
    figures: dict[str, Any] = {"matmul_gflop_s": round(matmul / 1e9, 1), "ours": ours}
    main = ours.get("multi30k_gru_bahdanau")
    if main is not None:
        figures["roofline_fraction"] = round(main["roofline_fraction"], 3)
        figures["ours_tok_s"] = round(main["tok_s_median"])
        figures["peak_rss_mib"] = round(main["peak_rss_mib"])
        verdict = main["roofline_fraction"] >= TARGETS["roofline_fraction"]
        print(
            f"roofline fraction (GRU + Bahdanau): {main['roofline_fraction']:.2f} "
            f"(target {TARGETS['roofline_fraction']:.2f}): {'met' if verdict else 'NOT met'}"
        )
    if joey is not None and main is not None:
        ratio = main["tgt_tok_s_median"] / joey["tgt_tok_s_median"]
        rss_ok = main["peak_rss_mib"] <= joey["peak_rss_mib"]
        met = ratio >= TARGETS["joeynmt_ratio"] and rss_ok
        print(
            f"ours/JoeyNMT target tokens/s (GRU + Bahdanau): {ratio:.2f}x "
            f"(target {TARGETS['joeynmt_ratio']:g}x), peak RSS {main['peak_rss_mib']:.0f} vs "
            f"{joey['peak_rss_mib']:.0f} MiB: {'met' if met else 'NOT met'}"
        )
        figures |= {"joeynmt": joey, "ratio": round(ratio, 2)}
        figures["joeynmt_tgt_tok_s"] = round(joey["tgt_tok_s_median"])
    for key, value in extra.items():
        print(f"{key}: {json.dumps(value)}")
    print(json.dumps(figures | extra, default=str))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "train_speed")
    p.add_argument("--data-dir", type=Path, default=MULTI30K)
    p.add_argument("--configs", type=Path, nargs="+", default=CONFIGS)
    p.add_argument("--warmup", type=int, default=5, help="updates before timing")
    p.add_argument("--steps", type=int, default=30, help="timed updates")
    p.add_argument("--compare-joeynmt", action="store_true", help="run JoeyNMT 2.3.0 too")
    p.add_argument(
        "--joeynmt-logs", type=int, default=4, help=f"its timed intervals of {JOEY_LOG_EVERY}"
    )
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p.parse_args()


def main() -> None:
    args = parse_args()
    code = git_state()  # the code that runs, before any edit meanwhile
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    matmul = matmul_flops(args.threads)
    log(f"fp32 matmul on {args.threads} threads: {matmul / 1e9:.1f} GFLOP/s")
    ours = {config.stem: measure_ours(config.resolve(), work, args) for config in args.configs}
    joey = None
    if args.compare_joeynmt:
        spm_file = work / CONFIGS[0].stem / "spm.model"
        if not spm_file.exists():
            raise SystemExit(f"--compare-joeynmt needs {CONFIGS[0]} among --configs")
        joey = measure_joeynmt(work, spm_file, args)
    extra = {"threads": args.threads, "warmup": args.warmup, "steps": args.steps}
    report(ours, joey, matmul, extra | {"code": code})


if __name__ == "__main__":
    if sys.argv[1:2] == ["_measure"]:
        measure_child(*sys.argv[2:])
    else:
        main()
