"""benchmarks/beyond_one.py's report: the runs compared at equal updates, each kind of
decoding summarized over seeds (paired with the single best checkpoints), and each
ensemble against the targets; tables, then one JSON line."""

import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import mean_sd, print_table

ENSEMBLE_GAIN, ENSEMBLE_BLEU, ENSEMBLE_SLOWDOWN = 1.5, 41.0, 3.3  # the targets
ENSEMBLES = {"ensemble": "single", "ensemble-average": "average", "ensemble-ema": "ema"}


def validation_at(trained: list[dict]) -> dict[str, Any]:
    """Each run's validation BLEU at the earliest of the runs' last validations (its last
    validation at or before it), and per kind their count, mean and sd; a run that had not
    validated by then counts in none."""
    validations = {id(t): _validations(Path(t["checkpoints"]).parent) for t in trained}
    updates = min((max(steps) for steps in validations.values() if steps), default=0)
    by_kind: dict[str, list[float]] = {}
    for t in trained:
        before = [bleu for step, bleu in validations[id(t)].items() if step <= updates]
        t["val_bleu_at_equal_updates"] = round(before[-1], 2) if before else None
        by_kind.setdefault(t["kind"], []).extend(before[-1:])
    found: dict[str, Any] = {"updates": updates}
    for kind, scores in by_kind.items():
        if scores:
            mean, sd = mean_sd(scores)
            found[kind] = {"n": len(scores), "mean": round(mean, 2), "sd": sd and round(sd, 2)}
    return found


def _validations(run: Path) -> dict[int, float]:
    """update -> validation BLEU, in order, from the run's CSV log."""
    logs = sorted(run.glob("lightning_logs/version_*/metrics.csv"))
    with open(logs[-1]) as f:
        return {int(r["step"]): float(r["val_bleu"]) for r in csv.DictReader(f) if r["val_bleu"]}


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
            f"{kind} val BLEU {_mean_sd_text(f['mean'], f['sd'])} ({f['n']} runs)"
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
