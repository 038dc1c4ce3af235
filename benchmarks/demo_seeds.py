"""The demo recipe over seeds: does `make demo` converge whatever the seed?

    python benchmarks/demo_seeds.py --seeds 1 2 3 4 5

Trains configs/demo.yaml once per seed (`--seed_everything S --data.seed S`: the
initial weights, dropout and batch order change; the corpus does not), each in a
fresh process capped at `--minutes` of wall time, and reads the test BLEU and chrF
that training reports for its best checkpoint (beam 5, sacrebleu on detokenized,
cased output, as `make demo` prints). Prints a table per seed, min, median, mean
and standard deviation, then a JSON last line.
"""

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, git_state, log, print_table, train_ours

CONFIG = REPO / "configs" / "demo.yaml"
TARGET_BLEU = 97.0


def read_metrics(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of each column of a CSVLogger's metrics.csv, and the best
    validation BLEU as `best_val_bleu`."""
    values: dict[str, float] = {}
    val_bleus = []
    with metrics_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            values |= {name: float(value) for name, value in row.items() if value}
            val_bleus += [float(row["val_bleu"])] if row.get("val_bleu") else []
    return values | {"best_val_bleu": max(val_bleus)}


def run_seed(seed: int, work: Path, minutes: float) -> dict[str, Any]:
    out = work / f"seed{seed}"
    trained = train_ours(
        out, CONFIG, minutes, ["--seed_everything", str(seed), "--data.seed", str(seed)]
    )
    metrics = read_metrics(next(out.glob("**/metrics.csv")))
    return {
        "test_bleu": round(metrics["test_bleu"], 2),
        "test_chrf": round(metrics["test_chrf"], 2),
        "best_val_bleu": round(metrics["best_val_bleu"], 2),
        "epochs": int(metrics["epoch"]) + 1,
        "updates": int(metrics["step"]),
        "wall_s": round(trained["wall_s"], 1),
        "others_cpu_s": trained["others_cpu_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--minutes", type=float, default=10.0, help="wall-time cap per seed")
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "demo_seeds")
    args = p.parse_args()
    code = git_state()
    per_seed = {}
    for seed in args.seeds:
        per_seed[seed] = run_seed(seed, args.work_dir.resolve(), args.minutes)
        log(f"seed {seed}: {per_seed[seed]}")
    header = ["seed", "test BLEU", "chrF", "epochs", "updates", "wall s", "others' CPU s"]
    keys = ["test_bleu", "test_chrf", "epochs", "updates", "wall_s", "others_cpu_s"]
    print_table(header, [[str(s)] + [str(r[k]) for k in keys] for s, r in per_seed.items()])
    bleus = [r["test_bleu"] for r in per_seed.values()]
    summary = {
        "min_bleu": min(bleus),
        "median_bleu": statistics.median(bleus),
        "mean_bleu": round(statistics.mean(bleus), 2),
        "sd_bleu": round(statistics.stdev(bleus), 2) if len(bleus) > 1 else 0.0,
    }
    verdict = "met" if summary["min_bleu"] >= TARGET_BLEU else "NOT met"
    print(
        f"min {summary['min_bleu']:.2f}, median {summary['median_bleu']:.2f}, mean "
        f"{summary['mean_bleu']:.2f} ± {summary['sd_bleu']:.2f} BLEU "
        f"(target: min >= {TARGET_BLEU:g}): {verdict}"
    )
    print(json.dumps(summary | {"per_seed": per_seed, "code": code, "minutes": args.minutes}))


if __name__ == "__main__":
    main()
