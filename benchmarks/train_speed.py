"""Training throughput of the Multi30k configs, against JoeyNMT 2.3.0.

    python benchmarks/train_speed.py                       # our four Multi30k configs
    python benchmarks/train_speed.py --compare-joeynmt     # ... and JoeyNMT on the reference
    python benchmarks/train_speed.py --configs configs/multi30k_gru_luong_additive.yaml --steps 10

Each config trains in a fresh process through `scripts/train.py`'s own CLI and Trainer
(optimizer, clipping and logging included; no validation) for `--warmup` then `--steps`
updates. Throughput is non-pad source + target tokens (target with EOS) over the wall
time from one batch's start to the next: the median over the timed steps; the target
tokens alone are shown too, since JoeyNMT logs those, and the real target tokens per
update of each side's batching (ours: the timed batches' mean, bucketed by length;
JoeyNMT: the mean over an epoch of its unbucketed, padding-counted batches, computed from
the corpus). Each side runs at its fastest batching. Peak RSS is the process's
`ru_maxrss`. `--compare-joeynmt` trains JoeyNMT on the reference architecture
(multi30k_gru_luong_additive, which must be among `--configs`) with our SentencePiece
model as its users configure it (`joeynmt_peer.recipe_config`), once per batch size of
its recipes (`--joeynmt-batches`), for 10 x (`--joeynmt-logs` + 1) updates without
validation; the median of its logged real target tokens/s after the first interval is
set against ours (target 2.5x its fastest batch size). A table, then one JSON line.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common
from benchmarks import joeynmt_peer as peer

REFERENCE = "multi30k_gru_luong_additive"
CONFIGS = [
    common.REPO / "configs" / f"multi30k_{name}.yaml"
    for name in ("gru_luong_additive", "gru_noattn", "lstm_luong_additive", "lstm_noattn")
]
JOEYNMT_RATIO_TARGET = 2.5  # ours / JoeyNMT's fastest batch size, target tokens/s
JOEY_LOG_EVERY = 10  # updates between its "Tokens per Sec" lines


def measure_child(config: str, warmup: str, steps: str, out_dir: str) -> None:
    """In a fresh process: train `config` for warmup + steps updates; print the figures as
    one JSON line; keep its SentencePiece model and hyperparameters in `out_dir`."""
    from benchmarks.training_child import StepClock, short_run

    cli = short_run(config, out_dir, int(warmup) + int(steps) + 1, [])
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    # Step i lasts from its start to step i+1's: data loading, forward, backward, optimizer.
    timed = range(int(warmup), len(clock.starts) - 1)
    seconds = [clock.starts[i + 1] - clock.starts[i] for i in timed]
    both = [sum(clock.tokens[i]) / s for i, s in zip(timed, seconds, strict=True)]
    target = [clock.tokens[i][1] / s for i, s in zip(timed, seconds, strict=True)]
    figures = {"steps_timed": len(seconds), "step_s_median": statistics.median(seconds)}
    figures |= {
        "tok_s_median": statistics.median(both),
        "tgt_tok_s_median": statistics.median(target),
        "tgt_tok_per_update": statistics.mean(clock.tokens[i][1] for i in timed),
    }
    Path(out_dir, "spm.model").write_bytes(cli.datamodule.tokenizer.to_dict()["src"])
    hparams = {"model": dict(cli.model.hparams), "data": dict(cli.datamodule.hparams)}
    Path(out_dir, "hparams.json").write_text(json.dumps(hparams, default=str))
    print(json.dumps(figures))


def measure_ours(config: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`measure_child` of `config`; -> its figures, wall seconds, peak RSS, others' CPU."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "_measure", config, args.warmup, args.steps, out]
    common.log(f"training {config.name}: {args.warmup} warm-up + {args.steps} timed updates")
    env = common.child_env(args.threads)
    measured = common.run_measured(cmd, out / "train.log", stdout=out / "result.json", env=env)
    return json.loads((out / "result.json").read_text().strip().splitlines()[-1]) | measured


def measure_joeynmt(work: Path, args: argparse.Namespace) -> dict[str, dict]:
    """JoeyNMT in its recipes' configuration with each of `--joeynmt-batches`; -> per batch
    label, its logged target tokens/s (the median after the first interval)."""
    python = peer.ensure_joeynmt()
    spm_file = work / REFERENCE / "spm.model"
    hparams = json.loads((spm_file.parent / "hparams.json").read_text())
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    voc_file = peer.write_joeynmt_data(args.data_dir, sp, work)
    lengths = peer.corpus_lengths(sp, sp, args.data_dir / "train", hparams["data"]["max_len"])
    updates = JOEY_LOG_EVERY * (args.joeynmt_logs + 1)
    measured = {}
    for batch in args.joeynmt_batches:
        cfg = peer.recipe_config(hparams["model"], hparams["data"], work, spm_file, voc_file, batch)
        cfg["training"] |= {"updates": updates, "logging_freq": JOEY_LOG_EVERY}
        cfg["training"]["validation_freq"] = updates + JOEY_LOG_EVERY  # none while timed
        trained = peer.train_joeynmt(python, cfg, work, None, args.threads)
        label = peer.batch_label(batch)
        train_log = (work / "joeynmt" / "train.log").rename(work / f"joeynmt-{label}.log")
        rates = peer.logged_rates(train_log.read_text(errors="replace"))
        if len(rates) < 2:
            raise RuntimeError(f"JoeyNMT logged {len(rates)} throughput lines; see {train_log}")
        measured[label] = {
            "tgt_tok_s_median": statistics.median(rates[1:]),  # the first interval warms up
            "tgt_tok_s_all": rates,
            "tgt_tok_per_update": peer.real_tgt_tokens_per_update(lengths, *batch),
            "updates": trained["steps"],
            "peak_rss_mib": round(trained["peak_rss_mib"], 1),
            "others_cpu_s": trained["others_cpu_s"],
        }
    return measured


def report(ours: dict[str, dict], joey: dict[str, dict], figures: dict[str, Any]) -> None:
    """The table, the verdict against JoeyNMT, and last one JSON line."""
    header = ["config", "tok/s (src+tgt)", "tgt tok/s", "tgt tok/update", "step s"]
    header += ["peak RSS MiB", "others CPU s"]
    digits = {"tok_s_median": 0, "tgt_tok_s_median": 0, "tgt_tok_per_update": 0}
    digits |= {"step_s_median": 3}
    digits |= {"peak_rss_mib": 0, "others_cpu_s": 0}
    named = ours | {f"joeynmt {label}": r for label, r in joey.items()}
    rows = [
        [name, *(f"{r[k]:.{d}f}" if k in r else "" for k, d in digits.items())]
        for name, r in named.items()
    ]
    common.print_table(header, rows)
    figures["ours"] = ours
    if joey:
        fastest = max(joey, key=lambda label: joey[label]["tgt_tok_s_median"])
        ratio = ours[REFERENCE]["tgt_tok_s_median"] / joey[fastest]["tgt_tok_s_median"]
        met = ratio >= JOEYNMT_RATIO_TARGET
        print(
            f"ours/JoeyNMT target tokens/s, each at its fastest batching ({REFERENCE} "
            f"bucketed by tokens; JoeyNMT {fastest}): "
            f"{ratio:.2f}x (target {JOEYNMT_RATIO_TARGET:g}x): {common.verdict(met)}"
        )
        figures |= {"joeynmt": joey, "joeynmt_fastest": fastest, "ratio": round(ratio, 2)}
        figures["ratio_target_met"] = met
    common.print_json(figures)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--work-dir", type=Path, default=common.REPO / ".cache" / "bench" / "train_speed"
    )
    p.add_argument("--data-dir", type=Path, default=common.MULTI30K)
    p.add_argument("--configs", type=Path, nargs="+", default=CONFIGS)
    p.add_argument("--warmup", type=int, default=5, help="updates before timing")
    p.add_argument("--steps", type=int, default=30, help="timed updates")
    p.add_argument("--compare-joeynmt", action="store_true", help="run JoeyNMT 2.3.0 too")
    p.add_argument(
        "--joeynmt-batches",
        type=peer.batch_setting,
        nargs="+",
        default=[peer.batch_setting(b) for b in peer.RECIPE_BATCHES],
        help=f"its batch sizes to time (Ntok or Nsent); default {' '.join(peer.RECIPE_BATCHES)}",
    )
    p.add_argument("--joeynmt-logs", type=int, default=4, help="its timed intervals of 10")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    if args.compare_joeynmt and REFERENCE not in [config.stem for config in args.configs]:
        p.error(f"--compare-joeynmt needs configs/{REFERENCE}.yaml among --configs")
    return args


def main() -> None:
    args = parse_args()
    work = args.work_dir.resolve()
    figures: dict[str, Any] = {"code": common.git_state(), "threads": args.threads}
    figures |= {"warmup": args.warmup, "steps": args.steps}
    ours = {c.stem: measure_ours(c.resolve(), work / c.stem, args) for c in args.configs}
    joey = measure_joeynmt(work, args) if args.compare_joeynmt else {}
    report(ours, joey, figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_measure"]:
        measure_child(*sys.argv[2:])
    else:
        main()
