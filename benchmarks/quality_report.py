"""benchmarks/quality.py's report: every run, each side's mean ± sd over seeds, the
JoeyNMT batch sizes tried, ours against JoeyNMT and the targets; then one JSON line."""

import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import mean_sd, print_table

TARGET_GAIN = 2.0  # BLEU points over JoeyNMT, in means over seeds
THROUGHPUT = (
    "tgt tok/s: real target tokens (EOS included; updates x the mean per batch over an epoch "
    "of each side's batching) / training wall time, validation included (ours: Lightning's "
    "Timer; JoeyNMT: its first epoch to its exit). log tok/s: the median of JoeyNMT's logged "
    '"Tokens per Sec" (the same tokens, validation excluded); ours logs none.'
)


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per side: its config, runs, BLEU and chrF mean and sd, mean RSS and throughput."""
    summary = {}
    for side in dict.fromkeys(run["side"] for run in runs):
        mine = [run for run in runs if run["side"] == side]
        figures = {"config": mine[0]["config"], "runs": len(mine)}
        for key in ("bleu", "chrf"):
            mean, sd = mean_sd([run[key] for run in mine])
            sd = None if sd is None else round(sd, 2)
            figures |= {f"{key}_mean": round(mean, 2), f"{key}_sd": sd}
        for key in ("train_peak_rss_mib", "tgt_tok_s"):
            figures[f"{key}_mean"] = round(statistics.mean(run[key] for run in mine))
        summary[side] = figures
    return summary


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _run_row(run: dict) -> list[str]:
    scores = [_cell(run[key], 2) for key in ("val_bleu", "bleu", "chrf")]
    speed = [_cell(run["tgt_tok_s"], 0), _cell(run.get("log_tok_s"), 0)]
    head = [run["side"], run["config"], str(run["seed"]), str(run["updates"])]
    tail = [str(run["train_peak_rss_mib"]), *speed, _cell(run["others_cpu_s"], 0), run["code"]]
    return [*head, *scores, *tail]


def _summary_row(side: str, s: dict) -> list[str]:
    bleu = f"{s['bleu_mean']:.2f} ± {_cell(s['bleu_sd'], 2)}"
    chrf = f"{s['chrf_mean']:.2f} ± {_cell(s['chrf_sd'], 2)}"
    figures = [str(s["runs"]), bleu, chrf, str(s["train_peak_rss_mib_mean"])]
    return [side, s["config"], *figures, str(s["tgt_tok_s_mean"])]


def _tried_row(tried: dict, chosen: str) -> list[str]:
    figures = [str(tried["updates"]), _cell(tried["val_bleu"], 2), str(tried["tgt_tok_s"])]
    return [tried["config"], str(tried["seed"]), *figures, "chosen" * (tried["config"] == chosen)]


def report(runs: list[dict], tried: list[dict], figures: dict[str, Any]) -> None:
    """The tables, the signatures, the gain against the target; then one JSON line."""
    header = ["side", "config", "seed", "updates", "val BLEU", "test BLEU", "chrF"]
    header += ["train RSS MiB", "tgt tok/s", "log tok/s", "others CPU s", "code"]
    print_table(header, list(map(_run_row, runs)))
    print(THROUGHPUT)
    summary = summarize(runs)
    header = ["side", "config", "runs", "test BLEU", "chrF", "train RSS MiB", "tgt tok/s"]
    print()
    print_table(header, [_summary_row(side, s) for side, s in summary.items()])
    if tried:
        print(f"\nJoeyNMT batch sizes tried ({figures['minutes']:g} minutes each):")
        rows = [_tried_row(t, figures["joeynmt_batch"]) for t in tried]
        print_table(["config", "seed", "updates", "val BLEU", "tgt tok/s", ""], rows)
    elif "joeynmt" in summary:
        print(f"\nJoeyNMT batch size: {figures['joeynmt_batch']} (given; none tried)")
    print(f"BLEU signature: {figures['bleu_signature']}")
    print(f"chrF signature: {figures['chrf_signature']}")
    figures = {"runs": runs, "summary": summary, "joeynmt_batch_search": tried} | figures
    if "joeynmt" in summary:
        print(figures["joeynmt_note"])
        gain = summary["ours"]["bleu_mean"] - summary["joeynmt"]["bleu_mean"]
        met = gain >= TARGET_GAIN
        verdict = "met" if met else "NOT met"
        print(f"ours - JoeyNMT: {gain:+.2f} BLEU in means (target +{TARGET_GAIN:g}): {verdict}")
        figures |= {"bleu_gain": round(gain, 2), "target_met": met}
        rss = [summary[side]["train_peak_rss_mib_mean"] for side in ("ours", "joeynmt")]
        verdict = "met" if rss[0] <= rss[1] else "NOT met"
        print(f"peak training RSS, means: ours {rss[0]} vs JoeyNMT {rss[1]} MiB: {verdict}")
        figures["rss_target_met"] = rss[0] <= rss[1]
    print(json.dumps(figures, default=str))
