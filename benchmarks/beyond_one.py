"""Beyond one model on Multi30k de→en: checkpoint averaging, EMA, a 3-seed ensemble.

    python benchmarks/beyond_one.py --seeds 1 2 3          # 6 runs of 45 minutes, then decoding
    python benchmarks/beyond_one.py --seeds 1 --no-ema     # a piece: seed 1's plain run only
    python benchmarks/beyond_one.py --seeds 1 2 --side-by-side   # plain and EMA at once

Per seed S, configs/multi30k_best.yaml trains as it is (its 45-minute budget, plateau
schedule, early stopping) with `--seed_everything S --data.seed S` and
`--checkpoint.save_top_k K` (`plain-seedS`), and the same with `--model.ema_decay D`
(`ema-seedS`; equal time: the average's cost is inside its budget). Decoding
test_2016_flickr with beam 5, sacrebleu on the detokenized, cased output:

- single: each plain run's best checkpoint by validation BLEU;
- average: the mean weights of each plain run's K best (scripts/average_checkpoints.py);
- ema: each EMA run's best checkpoint;
- ensemble: the plain runs' best checkpoints decoded together (mean of log-probabilities),
  with its decoding time over the mean of the singles';
- ensemble-average, ensemble-ema: the same with the seeds' averages, and EMA bests.

Each ensemble is set against the mean of its own members (single, average, ema).

Equal time holds only while the machine runs at one speed: each run records a 2048³
matmul's GFLOP/s before it starts, and the report also compares the runs at equal
updates (each run's validation BLEU at the fewest updates any run made, from its log).
`--side-by-side` removes the doubt: each seed's plain and EMA runs train at the same
time, each with one thread pinned to a core of its own, so both see the same machine
for the same minutes (fewer updates than one run on two cores).

Each decoding runs in a fresh process, timed from its first sentence to its last. Runs
finished by a former invocation (as many minutes) are kept in `--work-dir` and reused,
so the measurement can be made in pieces. Output: a table of every decoding, a summary
(mean ± sd per kind, paired differences with single), the ensemble against its targets,
then one JSON line.
"""

import argparse
import csv
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (
    MULTI30K,
    REPO,
    child_env,
    git_state,
    kept,
    log,
    mean_sd,
    print_table,
    run_measured,
    run_together,
    saved,
    saved_or_new,
    score,
    train_ours,
    training_job,
    translate_timed,
    write_test_set,
)
from benchmarks.roofline import SQUARE, gemm_flops
from seq2seq.checkpoint import run_checkpoints

CONFIG = REPO / "configs" / "multi30k_best.yaml"
BEAM = 5
ENSEMBLE_GAIN, ENSEMBLE_BLEU, ENSEMBLE_SLOWDOWN = 1.5, 41.0, 3.3  # the targets
ENSEMBLES = {"ensemble": "single", "ensemble-average": "average", "ensemble-ema": "ema"}


def overrides(kind: str, seed: int, args: argparse.Namespace) -> list:
    """`scripts/train.py` arguments of a `kind` ("plain" or "ema") run of `seed`."""
    data = ["--data.train", args.data_dir / "train", "--data.val", args.data_dir / "val"]
    found = [*data, "--data.test", "null", "--seed_everything", seed, "--data.seed", seed]
    found += ["--checkpoint.save_top_k", args.top_k]
    return found + (["--model.ema_decay", args.ema_decay] if kind == "ema" else [])


def described(kind: str, seed: int, run: Path, others_cpu_s: float, matmul: float) -> dict:
    """A finished run's figures, read from its last checkpoint."""
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {
        "kind": kind,
        "seed": seed,
        "updates": last["global_step"],
        "train_s": round(last["callbacks"]["Timer"]["time_elapsed"]["train"], 1),
        "others_cpu_s": others_cpu_s,
        "matmul_gflop_s": round(matmul, 1),
        "checkpoints": str(run / "checkpoints"),
    }


def train_run(work: Path, kind: str, seed: int, args: argparse.Namespace) -> dict:
    """A `kind` ("plain" or "ema") run of `seed`, trained or kept from a former invocation."""
    run = work / "runs" / f"{kind}-seed{seed}"

    def make() -> dict:
        matmul = gemm_flops(args.threads, *SQUARE) / 1e9  # the machine's speed now
        trained = train_ours(run, CONFIG, args.minutes, overrides(kind, seed, args))
        return described(kind, seed, run, trained["others_cpu_s"], matmul)

    return saved_or_new(run, args, make)


def train_pair(work: Path, seed: int, args: argparse.Namespace) -> list[dict]:
    """`seed`'s plain and EMA runs trained at the same time, each with one thread on a core
    of its own (`--side-by-side`): equal time on equal hardware, whatever the machine's
    speed does meanwhile. Kept from a former invocation when both were."""
    runs = {kind: work / "side-by-side" / f"{kind}-seed{seed}" for kind in ("plain", "ema")}
    found = [kept(run, args) for run in runs.values()]
    if all(found):
        return found
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        raise SystemExit("--side-by-side needs two CPU cores")
    matmul = gemm_flops(1, *SQUARE) / 1e9  # one core's speed now
    jobs = []
    for core, (kind, run) in zip(cores, runs.items(), strict=True):
        job = training_job(run, CONFIG, args.minutes, overrides(kind, seed, args))
        jobs.append(replace(job, env=child_env(1, ours=True), cores={core}))
    measured = run_together(jobs)
    return [
        saved(run, args, described(kind, seed, run, m["others_cpu_s"], matmul))
        for (kind, run), m in zip(runs.items(), measured, strict=True)
    ]


def validation_at(trained: list[dict]) -> dict[str, Any]:
    """Each run's validation BLEU at the fewest updates any run validated at last (its last
    validation at or before them), and per kind their mean and sd."""
    validations = {id(t): _validations(Path(t["checkpoints"]).parent) for t in trained}
    updates = min(max(steps) for steps in validations.values())
    by_kind: dict[str, list[float]] = {}
    for t in trained:
        before = [bleu for step, bleu in validations[id(t)].items() if step <= updates]
        t["val_bleu_at_equal_updates"] = round(before[-1], 2) if before else None
        by_kind.setdefault(t["kind"], []).extend(before[-1:])
    found: dict[str, Any] = {"updates": updates}
    for kind, scores in by_kind.items():
        if scores:
            mean, sd = mean_sd(scores)
            found[kind] = {"mean": round(mean, 2), "sd": sd and round(sd, 2)}
    return found


def _validations(run: Path) -> dict[int, float]:
    """update -> validation BLEU, in order, from the run's CSV log."""
    logs = sorted(run.glob("lightning_logs/version_*/metrics.csv"))
    with open(logs[-1]) as f:
        return {int(r["step"]): float(r["val_bleu"]) for r in csv.DictReader(f) if r["val_bleu"]}


def averaged(run: dict, args: argparse.Namespace) -> Path:
    """The mean weights of `run`'s `--top-k` best checkpoints, written beside them."""
    checkpoints = Path(run["checkpoints"])
    output = checkpoints.parent / f"average-best{args.top_k}.ckpt"
    cmd = [sys.executable, "scripts/average_checkpoints.py", "--run-dir", checkpoints]
    cmd += ["--best", args.top_k, "--output", output]
    run_measured(cmd, checkpoints.parent / "average.log", env=child_env(args.threads, ours=True))
    return output


def decoded(
    name: str, checkpoints: list[Path], work: Path, src: Path, refs: list[str], args
) -> dict:
    """Test BLEU, chrF and decoding seconds of `checkpoints` (one, or an ensemble)."""
    out = work / "decode" / name
    out.mkdir(parents=True, exist_ok=True)
    log(f"decoding test with {name} ({len(checkpoints)} model(s)), beam {BEAM}")
    cmd = [sys.executable, __file__, "_decode", src, out / "hyp.en", BEAM, *checkpoints]
    env = child_env(args.threads, ours=True)
    run_measured(cmd, out / "stderr.log", stdout=out / "result.json", env=env)
    seconds = json.loads((out / "result.json").read_text())["decode_s"]
    scores = score(out / "hyp.en", refs)
    log(f"{name}: test BLEU {scores['bleu']}, chrF {scores['chrf']}, {seconds:.1f} s")
    result = {"name": name, "models": [str(c) for c in checkpoints], "decode_s": round(seconds, 2)}
    return result | scores


def summarize(decodings: list[dict]) -> dict[str, Any]:
    """Per kind, BLEU and chrF mean and sd; each kind's paired BLEU difference with single."""
    by_kind: dict[str, list[dict]] = {}
    for d in decodings:
        by_kind.setdefault(d["kind"], []).append(d)
    summary: dict[str, Any] = {}
    single = {d["seed"]: d["bleu"] for d in by_kind.get("single", [])}
    for kind, mine in by_kind.items():
        figures: dict[str, Any] = {"decodings": len(mine)}
        for key in ("bleu", "chrf"):
            mean, sd = mean_sd([d[key] for d in mine])
            figures |= {f"{key}_mean": round(mean, 2), f"{key}_sd": sd and round(sd, 2)}
        paired = [d["bleu"] - single[d["seed"]] for d in mine if d["seed"] in single]
        if kind != "single" and kind not in ENSEMBLES and paired:
            mean, sd = mean_sd(paired)
            figures |= {"minus_single_mean": round(mean, 2), "minus_single_sd": sd and round(sd, 2)}
        summary[kind] = figures
    return summary


def ensemble_verdict(
    ensemble_kind: str, summary: dict[str, Any], decodings: list[dict]
) -> dict[str, Any]:
    """An ensemble against its targets: BLEU over its members' mean, BLEU, slowdown."""
    members_kind = ENSEMBLES[ensemble_kind]
    ensemble = next(d for d in decodings if d["kind"] == ensemble_kind)
    members = [d for d in decodings if d["kind"] == members_kind]
    gain = ensemble["bleu"] - summary[members_kind]["bleu_mean"]
    slowdown = ensemble["decode_s"] / statistics.mean(d["decode_s"] for d in members)
    return {
        "members": members_kind,
        "gain": round(gain, 2),
        "slowdown": round(slowdown, 2),
        "gain_met": gain >= ENSEMBLE_GAIN,
        "bleu_met": ensemble["bleu"] >= ENSEMBLE_BLEU,
        "slowdown_met": slowdown <= ENSEMBLE_SLOWDOWN,
    }


def report(trained: list[dict], decodings: list[dict], figures: dict[str, Any]) -> None:
    """The tables and verdicts; then one JSON line."""
    at_equal = validation_at(trained)
    header = ["run", "updates", "train s", "others CPU s", "2048³ GFLOP/s", "code"]
    print_table(
        [*header, f"val BLEU at {at_equal['updates']} updates"], list(map(_run_row, trained))
    )
    print(
        f"at {at_equal['updates']} updates: "
        + ", ".join(
            f"{kind} val BLEU {_mean_sd_text(f['mean'], f['sd'])}"
            for kind, f in at_equal.items()
            if kind != "updates"
        )
    )
    figures["at_equal_updates"] = at_equal
    print()
    header = ["decoding", "kind", "seed", "test BLEU", "chrF", "decode s"]
    print_table(header, list(map(_decoding_row, decodings)))
    summary = summarize(decodings)
    print()
    header = ["kind", "n", "test BLEU", "chrF", "BLEU - single (paired)"]
    print_table(header, [_summary_row(kind, s) for kind, s in summary.items()])
    figures |= {"trained": trained, "decodings": decodings, "summary": summary}
    for kind in ENSEMBLES:
        if kind in summary:
            verdict = ensemble_verdict(kind, summary, decodings)
            print(
                f"{kind} - {verdict['members']} mean: {verdict['gain']:+.2f} BLEU (target "
                f"+{ENSEMBLE_GAIN}: {_met(verdict['gain_met'])}); BLEU >= {ENSEMBLE_BLEU}: "
                f"{_met(verdict['bleu_met'])}; decoding time x{verdict['slowdown']:.2f} one "
                f"model's (target <= {ENSEMBLE_SLOWDOWN}: {_met(verdict['slowdown_met'])})"
            )
            figures[kind] = verdict
    print(f"BLEU signature: {figures['bleu_signature']}")
    print(json.dumps(figures, default=str))


def _run_row(t: dict) -> list[str]:
    name = f"{t['kind']}-seed{t['seed']}"
    times = [f"{t['train_s']:.0f}", f"{t['others_cpu_s']:.0f}", str(t.get("matmul_gflop_s", "-"))]
    bleu = t["val_bleu_at_equal_updates"]
    return [name, str(t["updates"]), *times, t["code"], "-" if bleu is None else f"{bleu:.2f}"]


def _decoding_row(d: dict) -> list[str]:
    seed = "-" if d["seed"] is None else str(d["seed"])
    scores = [f"{d['bleu']:.2f}", f"{d['chrf']:.2f}", f"{d['decode_s']:.1f}"]
    return [d["name"], d["kind"], seed, *scores]


def _summary_row(kind: str, s: dict) -> list[str]:
    paired = "-"
    if "minus_single_mean" in s:
        paired = _mean_sd_text(s["minus_single_mean"], s["minus_single_sd"], signed=True)
    bleu = _mean_sd_text(s["bleu_mean"], s["bleu_sd"])
    return [kind, str(s["decodings"]), bleu, _mean_sd_text(s["chrf_mean"], s["chrf_sd"]), paired]


def _mean_sd_text(mean: float, sd: float | None, signed: bool = False) -> str:
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if sd is None else f"{text} ± {sd:.2f}"


def _met(met: bool) -> str:
    return "met" if met else "NOT met"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=45.0, help="training time of each run")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one run per seed")
    p.add_argument("--top-k", type=int, default=5, help="checkpoints kept and averaged")
    p.add_argument("--ema-decay", type=float, default=0.999, help="--model.ema_decay")
    p.add_argument("--no-ema", action="store_true", help="train and decode plain runs only")
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="train each seed's plain and EMA runs at once, one core and thread each",
    )
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "beyond-one")
    p.add_argument("--data-dir", type=Path, default=MULTI30K)
    p.add_argument("--threads", type=int, default=2, help="threads for decoding")
    p.add_argument(
        "--retrain", action="store_true", help="train every run anew (by default kept runs)"
    )
    args = p.parse_args()
    if args.side_by_side and args.no_ema:
        p.error("--side-by-side trains a plain and an EMA run together: drop --no-ema")
    return args


def main() -> None:
    args = parse_args()
    args.code = git_state()  # the code that runs, before any edit meanwhile
    work = args.work_dir.resolve()
    src, refs = write_test_set(work, args.data_dir)
    kinds = ["plain"] if args.no_ema else ["plain", "ema"]
    if args.side_by_side:
        trained = [run for seed in args.seeds for run in train_pair(work, seed, args)]
    else:
        trained = [train_run(work, kind, seed, args) for seed in args.seeds for kind in kinds]
    decodings, members = [], {kind: [] for kind in ENSEMBLES.values()}
    for run in trained:
        kind, seed = run["kind"], run["seed"]
        best = run_checkpoints(Path(run["checkpoints"]), 1, None)[0]
        models = {"single" if kind == "plain" else "ema": best}
        if kind == "plain":
            models["average"] = averaged(run, args)
        for model_kind, checkpoint in models.items():
            name = f"average{args.top_k}" if model_kind == "average" else model_kind
            decodings.append(decoded(f"{name}-seed{seed}", [checkpoint], work, src, refs, args))
            decodings[-1] |= {"kind": model_kind, "seed": seed}
            members[model_kind].append(checkpoint)
    for ensemble_kind, members_kind in ENSEMBLES.items():
        if len(members[members_kind]) > 1:
            checkpoints = members[members_kind]
            decodings.append(decoded(ensemble_kind, checkpoints, work, src, refs, args))
            decodings[-1] |= {"kind": ensemble_kind, "seed": None}
    signature = decodings[0]["bleu_signature"]
    for d in decodings:
        del d["bleu_signature"], d["chrf_signature"]
    figures = {"minutes": args.minutes, "seeds": args.seeds, "beam": BEAM, "top_k": args.top_k}
    figures |= {"ema_decay": None if args.no_ema else args.ema_decay, "code": args.code}
    figures["side_by_side"] = args.side_by_side
    report(trained, decodings, figures | {"bleu_signature": signature})


if __name__ == "__main__":
    if sys.argv[1:2] == ["_decode"]:
        src, hyp, beam, *checkpoints = sys.argv[2:]
        translate_timed(checkpoints, src, hyp, beam_size=int(beam))
    else:
        main()
