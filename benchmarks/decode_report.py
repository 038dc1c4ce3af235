"""benchmarks/decode.py's report: ours against --baseline's code and against JoeyNMT in
each mode, against the targets; a table, then one JSON line."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import print_table, read_lines

TARGETS = {"greedy": 2.0, "beam": 3.0}  # ours / JoeyNMT sentences per second, at BLEU >= theirs
BASELINE_TARGET = 2.0  # ours / --baseline sentences per second, in each mode
OURS = {"32": "ours", "bf16": "ours-bf16"}  # side names by --precision; targets count "ours"
OURS_BASE = ("ours", "baseline")  # side names of --baseline's comparison


def compare_baseline(runs: list[dict], work: Path) -> dict[str, dict]:
    """Ours against --baseline in each mode: the speed ratio and the output lines that differ."""
    by = {(r["side"], r["mode"]): r for r in runs}
    found = {}
    for mode in ("greedy", "beam"):
        ours, base = by[("ours", mode)], by[("baseline", mode)]
        hyps = [read_lines(work / "decode" / f"{side}-{mode}" / "hyp.en") for side in OURS_BASE]
        differ = sum(a != b for a, b in zip(*hyps, strict=True))
        ratio = ours["sent_per_s"] / base["sent_per_s"]
        found[mode] = {"ratio": round(ratio, 2), "lines_differ": differ}
        found[mode] |= {"lines": len(hyps[0]), "bleu": [ours["bleu"], base["bleu"]]}
        found[mode]["met"] = ratio >= BASELINE_TARGET
    return found


def report(runs: list[dict], extra: dict) -> None:
    """The table, the ratios against JoeyNMT, the settings, and last one JSON line."""
    header = ["side", "mode", "sent/s", "decode s", "wall s", "peak RSS MiB", "mean len", "BLEU"]
    header += ["MFLOP/sent", "GFLOP/s", "roofline"]
    keys = ["sent_per_s", "decode_s", "wall_s", "peak_rss_mib", "mean_len_words", "bleu"]
    keys += ["mflop_per_sentence", "gflop_s", "roofline"]
    rows = [[r["side"], r["mode"], *(f"{r[k]:.2f}" if k in r else "" for k in keys)] for r in runs]
    print_table(header, rows)
    rates = extra.get("gemm_rates")
    if rates:
        print(
            f"roofline: ours' fp32 GFLOP/s over the better of a 2048³ fp32 matmul "
            f"({rates['matmul_gflop_s']} GFLOP/s) and the mode's largest GEMM (greedy "
            f"{rates['greedy']['gflop_s']}, beam {rates['beam']['gflop_s']} GFLOP/s), timed here"
        )
        for r in runs:
            if "roofline" in r:
                print(
                    f"roofline fraction ours {r['mode']}: {r['roofline']:.2f} (twice its speed "
                    f"would take {2 * r['roofline']:.2f} of the GEMM rate)"
                )
    for mode, found in extra.get("against_baseline", {}).items():
        ours_bleu, base_bleu = found["bleu"]
        print(
            f"{mode}: ours/baseline {found['ratio']:.2f}x sentences/s (target "
            f"{BASELINE_TARGET:g}x): {'met' if found['met'] else 'NOT met'}; "
            f"{found['lines_differ']} of {found['lines']} output lines differ, "
            f"BLEU {ours_bleu:.2f} vs {base_bleu:.2f}"
        )
    by = {(r["side"], r["mode"]): r for r in runs}
    ratios, met, comparable = {}, {}, {}
    for side in OURS.values():
        for mode, target in TARGETS.items():
            if (side, mode) not in by or ("joeynmt", mode) not in by:
                continue
            ours, joey = by[side, mode], by["joeynmt", mode]
            key = mode if side == "ours" else f"{side} {mode}"
            ratios[key] = round(ours["sent_per_s"] / joey["sent_per_s"], 2)
            if side == "ours":
                met[key] = ratios[key] >= target and ours["bleu"] >= joey["bleu"]
            # Speed follows output length: a ratio means little when the lengths differ.
            gap = abs(ours["mean_len_words"] - joey["mean_len_words"])
            comparable[key] = gap <= 0.2 * extra["reference_mean_len_words"]
            verdict = "not counted (the targets are for fp32)"
            if side == "ours":
                verdict = "met" if met[key] else "NOT met"
            print(
                f"{key}: {side}/JoeyNMT {ratios[key]:.2f}x sentences/s (target {target:g}x), "
                f"BLEU {ours['bleu']:.2f} vs {joey['bleu']:.2f}: {verdict}"
                + ("" if comparable[key] else " (output lengths differ by over 20%: no verdict)")
            )
    for key, value in extra.items():
        print(f"{key}: {json.dumps(value)}")
    figures = {"runs": runs, "ratios": ratios, "targets_met": met, "lengths_comparable": comparable}
    print(json.dumps(figures | extra))
