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
updates (each run's validation BLEU at the earliest of the runs' last validations).
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
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.beyond_one_report import ENSEMBLES, report
from benchmarks.common import (
    MULTI30K,
    REPO,
    child_env,
    git_state,
    kept,
    log,
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
    if any(found):
        log(f"seed {seed}: one run of the pair is missing; both train again, side by side")
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
