"""Training throughput of the Multi30k configs, against the hardware and JoeyNMT 2.3.0.

    python benchmarks/train_speed.py                       # our four Multi30k configs
    python benchmarks/train_speed.py --compare-joeynmt     # ... and JoeyNMT, GRU + Bahdanau
    python benchmarks/train_speed.py --configs configs/multi30k_gru_luong_additive.yaml --steps 20
    python benchmarks/train_speed.py --baseline REV        # and the code of commit REV

Each config trains in a fresh process through `scripts/train.py`'s own CLI and
Trainer (optimizer, clipping and logging included; no validation) for `--warmup`
then `--steps` updates. Throughput is non-pad source + target tokens (target with
EOS) over the wall time from one batch's start to the next: the median over the
timed steps, and their total over their sum. Peak RSS is the process's `ru_maxrss`.

Roofline: the attainable rate is the better of a 2048³ fp32 matmul and the config's
own largest GEMM shape (recorded in its forward + backward), both timed here on the
same threads; `FlopCounterMode` counts the FLOPs of one forward + backward of a
training batch; achieved FLOP/s = tokens/s × FLOPs per token, and its share of the
attainable rate is the roofline fraction (targets: 0.70 for GRU + Bahdanau, the
reference model, 0.75 for the others).

JoeyNMT (`--compare-joeynmt`) is installed at run time into
`.cache/bench/joeynmt-venv`, never vendored, and trains the GRU + Bahdanau
architecture with our SentencePiece model as its users configure it
(`joeynmt_peer.recipe_config`: its RNN recipes' schedule and initialisers), once
per batch size of its recipes (`--joeynmt-batches`: 2,000 and 4,096 tokens, 80
sentences), for a fixed number of updates without validation. It logs real target
tokens/s (EOS included) every 10 updates; the median after the first interval is
compared with ours counted the same way, and the ratio is taken against its
fastest batch size. `--baseline REV` trains each config with the code of commit REV
too (`seq2seq/` and `benchmarks/` extracted from git), the two taking turns, and prints
ours over its tokens/s and both peak RSS. Output: a table, then one JSON line with
every figure.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (
    MULTI30K,
    REPO,
    child_env,
    export_baseline,
    git_state,
    log,
    print_table,
    run_measured,
)
from benchmarks.joeynmt_peer import (
    RECIPE_BATCHES,
    batch_label,
    batch_setting,
    ensure_joeynmt,
    logged_rates,
    patch_plateau,
    recipe_config,
    train_joeynmt,
    write_joeynmt_data,
)
from benchmarks.roofline import SQUARE, counting, gemm_flops

CONFIGS = [
    REPO / "configs" / f"multi30k_{name}.yaml"
    for name in ("gru_bahdanau", "gru_noattn", "lstm_bahdanau", "lstm_noattn")
]
JOEYNMT_RATIO_TARGET = 2.5  # target tokens/s, GRU + Bahdanau
ROOFLINE_TARGETS = {"multi30k_gru_luong_additive": 0.70, "other": 0.75}
JOEY_LOG_EVERY = 10  # updates between its "Tokens per Sec" lines


# -- ours, in a child process -----------------------------------------------------------------


def measure_child(config: str, warmup: str, steps: str, out_dir: str) -> None:
    """Train `config` for warmup + steps updates; print the figures as one JSON line."""
    from benchmarks.training_child import StepClock, short_run

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
    with counting() as (counter, gemms):  # the training step's forward and backward
        outputs = model.features(batch["src"], batch["src_lengths"], batch["tgt_in"])
        smoothing = cli.model.hparams.label_smoothing
        loss, _ = model.decoder.losses(
            outputs, batch["tgt_out"], smoothing=smoothing, pad_id=model.pad_id
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
        "largest_gemm": gemms.shape,
    }
    Path(out_dir, "spm.model").write_bytes(cli.datamodule.tokenizer.to_dict()["src"])
    hparams = {"model": dict(cli.model.hparams), "data": dict(cli.datamodule.hparams)}
    Path(out_dir, "hparams.json").write_text(json.dumps(hparams, default=str))
    print(json.dumps(figures))


def measure_ours(
    config: Path, out: Path, args: argparse.Namespace, root: Path = REPO
) -> dict[str, Any]:
    """Train `config` in a child running the code of `root` (this checkout, or a --baseline's)."""
    out.mkdir(parents=True, exist_ok=True)
    script = root / "benchmarks" / "train_speed.py"
    cmd = [sys.executable, script, "_measure", config, args.warmup, args.steps, out]
    side = "" if root == REPO else f" with the code of {root.name}"
    log(f"training {config.name}{side}: {args.warmup} warm-up + {args.steps} timed updates")
    env = child_env(args.threads, ours=True) | {"PYTHONPATH": str(root)}
    measured = run_measured(cmd, out / "train.log", stdout=out / "result.json", env=env)
    last_line = (out / "result.json").read_text().strip().splitlines()[-1]
    return json.loads(last_line) | measured


# -- the hardware -----------------------------------------------------------------------------


# -- JoeyNMT ------------------------------------------------------------------------------------


def measure_joeynmt(work: Path, spm_file: Path, args: argparse.Namespace) -> dict[str, dict]:
    """JoeyNMT in its recipes' configuration with each of `args.joeynmt_batches`;
    -> per batch label, its logged target tokens/s (median after the first interval)."""
    python = ensure_joeynmt()
    patch_plateau()  # its plateau schedule builds (it never steps: no validation here)
    hparams = json.loads((spm_file.parent / "hparams.json").read_text())
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    voc_file = write_joeynmt_data(args.data_dir, sp, work)
    updates = JOEY_LOG_EVERY * (args.joeynmt_logs + 1)
    measured = {}
    for batch in args.joeynmt_batches:
        cfg = recipe_config(hparams["model"], hparams["data"], work, spm_file, voc_file, batch)
        cfg["training"] |= {"updates": updates, "logging_freq": JOEY_LOG_EVERY}
        cfg["training"]["validation_freq"] = updates + JOEY_LOG_EVERY  # none while timed
        measured[batch_label(batch)] = _measure_joeynmt_run(python, cfg, work, args.threads)
    return measured


def _measure_joeynmt_run(python: Path, cfg: dict, work: Path, threads: int) -> dict[str, Any]:
    start = time.perf_counter()
    trained = train_joeynmt(python, cfg, work, None, child_env(threads, ours=False))
    wall = time.perf_counter() - start
    label = batch_label((cfg["training"]["batch_size"], cfg["training"]["batch_type"]))
    train_log = (work / "joeynmt" / "train.log").rename(work / "joeynmt" / f"train-{label}.log")
    rates = logged_rates(train_log.read_text(errors="replace"))
    if len(rates) < 2:
        raise RuntimeError(f"JoeyNMT logged {len(rates)} throughput lines; see {train_log}")
    return {
        "tgt_tok_s_median": statistics.median(rates[1:]),  # the first interval warms up
        "tgt_tok_s_all": rates,
        "updates": trained["steps"],
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(trained["peak_rss_mib"], 1),
        "others_cpu_s": trained["others_cpu_s"],
    }


# -- report -----------------------------------------------------------------------------------


def report(ours: dict[str, dict], joey: dict | None, square: float, extra: dict) -> None:
    """The table, the verdicts, and last one JSON line."""
    header = ["config", "tok/s (src+tgt)", "tgt tok/s", "MFLOP/tok", "GFLOP/s"]
    header += ["largest GEMM", "its GFLOP/s", "roofline", "RSS MiB"]
    rows = []
    for name, r in ours.items():
        r["gflop_s"] = r["tok_s_median"] * r["flops_per_token"] / 1e9
        r["roofline_fraction"] = r["gflop_s"] * 1e9 / max(square, r["gemm_flop_s"])
        rates = [f"{r['tok_s_median']:.0f}", f"{r['tgt_tok_s_median']:.0f}"]
        flops = [f"{r['flops_per_token'] / 1e6:.2f}", f"{r['gflop_s']:.1f}"]
        gemm = ["×".join(map(str, r["largest_gemm"])), f"{r['gemm_flop_s'] / 1e9:.1f}"]
        tail = [f"{100 * r['roofline_fraction']:.0f}%", f"{r['peak_rss_mib']:.0f}"]
        rows.append([name, *rates, *flops, *gemm, *tail])
    for label, run in (joey or {}).items():
        rate, rss = f"{run['tgt_tok_s_median']:.0f}", f"{run['peak_rss_mib']:.0f}"
        rows.append([f"joeynmt gru_bahdanau {label}", "", rate, "", "", "", "", "", rss])
    print_table(header, rows)
    print(
        f"roofline: achieved GFLOP/s over the better of a 2048³ fp32 matmul "
        f"({square / 1e9:.1f} GFLOP/s, {extra['threads']} threads) and the config's largest "
        "GEMM (m×k×n), both timed in this run"
    )
    figures: dict[str, Any] = {"matmul_gflop_s": round(square / 1e9, 1), "ours": ours}
    figures["roofline_met"] = {}
    for name, r in ours.items():
        target = ROOFLINE_TARGETS.get(name, ROOFLINE_TARGETS["other"])
        met = figures["roofline_met"][name] = r["roofline_fraction"] >= target
        print(
            f"roofline fraction {name}: {r['roofline_fraction']:.2f} "
            f"(target {target:.2f}): {'met' if met else 'NOT met'}"
        )
    main = ours.get("multi30k_gru_luong_additive")
    if main is not None:
        figures["roofline_fraction"] = round(main["roofline_fraction"], 3)
        figures["ours_tok_s"] = round(main["tok_s_median"])
        figures["peak_rss_mib"] = round(main["peak_rss_mib"])
    if joey and main is not None:
        fastest = max(joey, key=lambda label: joey[label]["tgt_tok_s_median"])
        ratio = main["tgt_tok_s_median"] / joey[fastest]["tgt_tok_s_median"]
        met = ratio >= JOEYNMT_RATIO_TARGET
        print(
            f"ours/JoeyNMT target tokens/s (GRU + Bahdanau, its fastest batch: {fastest}): "
            f"{ratio:.2f}x (target {JOEYNMT_RATIO_TARGET:g}x): {'met' if met else 'NOT met'}"
        )
        figures |= {"joeynmt": joey, "joeynmt_fastest": fastest, "ratio": round(ratio, 2)}
        figures["joeynmt_tgt_tok_s"] = round(joey[fastest]["tgt_tok_s_median"])
    if "against_baseline" in extra:
        _print_baseline(extra["against_baseline"])
    for key, value in extra.items():
        print(f"{key}: {json.dumps(value)}")
    print(json.dumps(figures | extra, default=str))


def against_baseline(
    ours: dict[str, dict], baseline: dict[str, dict], square: float, commit: str
) -> dict[str, Any]:
    """Per config, ours over the baseline's tokens/s, its roofline fraction, both peak RSS."""
    found: dict[str, Any] = {"code": commit}
    for name, r in ours.items():
        base = baseline[name]
        base_roofline = base["tok_s_median"] * base["flops_per_token"]
        found[name] = {
            "tok_s": [round(r["tok_s_median"]), round(base["tok_s_median"])],
            "ratio": round(r["tok_s_median"] / base["tok_s_median"], 2),
            "baseline_roofline_fraction": round(
                base_roofline / max(square, base["gemm_flop_s"]), 3
            ),
            "peak_rss_mib": [round(r["peak_rss_mib"]), round(base["peak_rss_mib"])],
        }
    return found


def _print_baseline(found: dict[str, Any]) -> None:
    commit = found["code"]
    header = ["config", "ours tok/s", f"{commit} tok/s", "ours/its", f"{commit} roofline"]
    rows = []
    for name, f in found.items():
        if name != "code":
            rows.append([name, *map(str, f["tok_s"]), f"{f['ratio']:.2f}x"])
            rss = " / ".join(map(str, f["peak_rss_mib"]))
            rows[-1] += [f"{f['baseline_roofline_fraction']:.0%}", rss]
    print_table([*header, "peak RSS MiB ours / its"], rows)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "train_speed")
    p.add_argument("--data-dir", type=Path, default=MULTI30K)
    p.add_argument("--configs", type=Path, nargs="+", default=CONFIGS)
    p.add_argument("--warmup", type=int, default=5, help="updates before timing")
    p.add_argument("--steps", type=int, default=30, help="timed updates")
    p.add_argument("--compare-joeynmt", action="store_true", help="run JoeyNMT 2.3.0 too")
    p.add_argument(
        "--joeynmt-batches",
        type=batch_setting,
        nargs="+",
        default=[batch_setting(b) for b in RECIPE_BATCHES],
        help=f"its batch sizes to time (Ntok or Nsent); default {' '.join(RECIPE_BATCHES)}",
    )
    p.add_argument(
        "--joeynmt-logs", type=int, default=4, help=f"its timed intervals of {JOEY_LOG_EVERY}"
    )
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--baseline", metavar="REV", help="train with the code of commit REV too")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    code = git_state()  # the code that runs, before any edit meanwhile
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    square = gemm_flops(args.threads, *SQUARE)
    log(f"fp32 2048³ matmul on {args.threads} threads: {square / 1e9:.1f} GFLOP/s")
    roots = {"ours": REPO}
    if args.baseline:
        commit, roots["baseline"] = export_baseline(args.baseline, work)
    measured: dict[str, dict[str, dict]] = {side: {} for side in roots}
    for i, config in enumerate(args.configs):
        for side in list(roots)[:: 1 if i % 2 == 0 else -1]:  # the sides take turns
            out = work / config.stem if side == "ours" else work / roots[side].name / config.stem
            measured[side][config.stem] = measure_ours(config.resolve(), out, args, roots[side])
    for r in (r for runs in measured.values() for r in runs.values()):
        r["gemm_flop_s"] = gemm_flops(args.threads, *r["largest_gemm"])
    ours = measured["ours"]
    joey = None
    if args.compare_joeynmt:
        spm_file = work / CONFIGS[0].stem / "spm.model"
        if not spm_file.exists():
            raise SystemExit(f"--compare-joeynmt needs {CONFIGS[0]} among --configs")
        joey = measure_joeynmt(work, spm_file, args)
    extra = {"threads": args.threads, "warmup": args.warmup, "steps": args.steps, "code": code}
    if args.baseline:
        extra["against_baseline"] = against_baseline(ours, measured["baseline"], square, commit)
    report(ours, joey, square, extra)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_measure"]:
        measure_child(*sys.argv[2:])
    else:
        main()
