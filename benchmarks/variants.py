"""Attention variants at equal training time, over seeds, on Multi30k de→en.

    python benchmarks/variants.py --minutes 30 --seeds 1 2 3
    python benchmarks/variants.py --variants bahdanau --seeds 1        # a piece

configs/multi30k_gru_luong_additive.yaml (GRU, bidirectional encoder, 256 units) trains once
per variant and seed, as benchmarks/quality.py trains it, with `--model.attention`
and `--model.attention_score` set by the variant:

- none: the fixed-context encoder-decoder (Cho et al., 2014);
- bahdanau: RNNsearch as published, additive scores (its default);
- luong: Luong et al.'s global attention with input feeding, general scores (its default);
- luong-additive: the config as it is (Luong's architecture with Bahdanau's score, as
  JoeyNMT): its runs are quality.py's `ours` runs, shared when `--work-dir` and
  `--minutes` are the same.

The best checkpoint by validation BLEU decodes test_2016_flickr with beam 5; sacrebleu
scores the detokenized, cased output. Training throughput is real target tokens per
second of training wall time (as quality.py counts it). Runs finished by a former
invocation are reused. Output: a table of the runs, a summary per variant (mean ± sd),
then one JSON line.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import MULTI30K, REPO, git_state, print_table, write_test_set
from benchmarks.quality import (
    BEAM,
    load_shared,
    scored,
    train_and_decode_ours,
    with_ours_throughput,
)
from benchmarks.quality_report import summarize

# variant -> (run name, options over the config)
VARIANTS = {
    "none": ("none", ["--model.attention", "none", "--model.attention_score", "null"]),
    "bahdanau": ("bahdanau", ["--model.attention", "bahdanau", "--model.attention_score", "null"]),
    "luong": ("luong", ["--model.attention", "luong", "--model.attention_score", "null"]),
    "luong-additive": ("ours", []),
}


def report(runs: list[dict], figures: dict[str, Any]) -> None:
    """The runs, a summary per variant; then one JSON line."""
    header = ["variant", "seed", "updates", "val BLEU", "test BLEU", "chrF", "tgt tok/s"]
    header += ["train RSS MiB", "others CPU s", "code"]
    print_table(header, list(map(_run_row, runs)))
    summary = summarize(runs)
    print()
    header = ["variant", "runs", "test BLEU", "chrF", "tgt tok/s", "train RSS MiB"]
    print_table(header, [_summary_row(variant, s) for variant, s in summary.items()])
    print(f"BLEU signature: {figures['bleu_signature']}")
    print(json.dumps({"runs": runs, "summary": summary} | figures, default=str))


def _run_row(run: dict) -> list[str]:
    val = "-" if run["val_bleu"] is None else f"{run['val_bleu']:.2f}"
    head = [run["side"], str(run["seed"]), str(run["updates"]), val]
    scores = [f"{run['bleu']:.2f}", f"{run['chrf']:.2f}", str(run["tgt_tok_s"])]
    tail = [str(run["train_peak_rss_mib"]), f"{run['others_cpu_s']:.0f}", run["code"]]
    return [*head, *scores, *tail]


def _summary_row(variant: str, s: dict) -> list[str]:
    def text(key: str) -> str:
        sd = s[f"{key}_sd"]
        return f"{s[f'{key}_mean']:.2f}" + ("" if sd is None else f" ± {sd:.2f}")

    figures = [text("bleu"), text("chrf"), str(s["tgt_tok_s_mean"])]
    return [variant, str(s["runs"]), *figures, str(s["train_peak_rss_mib_mean"])]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="training time of each run")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one run per seed")
    p.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="V"
    )
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "quality")
    p.add_argument("--data-dir", type=Path, default=MULTI30K)
    p.add_argument("--threads", type=int, default=2, help="threads for decoding")
    p.add_argument("--retrain", action="store_true", help="train every run anew")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    args.code = git_state()  # the code that runs, before any edit meanwhile
    work = args.work_dir.resolve()
    src, refs = write_test_set(work, args.data_dir)
    runs = []
    for variant in args.variants:
        name, options = VARIANTS[variant]
        for seed in args.seeds:
            run = train_and_decode_ours(work, src, seed, args, name, options)
            runs.append(run | {"side": variant})
    shared = load_shared(work, runs[0]["checkpoint"], args.data_dir)
    figures: dict[str, Any] = {"minutes": args.minutes, "seeds": args.seeds, "beam": BEAM}
    runs = [scored(with_ours_throughput(run, shared), refs, figures) for run in runs]
    report(runs, figures | {"code": args.code})


if __name__ == "__main__":
    main()
