"""Start-up of translate.py: one sentence, greedy, from process start to exit.

    python benchmarks/startup.py --checkpoint runs/x/checkpoints/best.ckpt
    python benchmarks/startup.py --checkpoint CKPT --repeats 20

Each run is a fresh process, `echo "Ein Hund läuft." | python scripts/translate.py
--checkpoint CKPT --greedy`, timed from spawn to exit with its peak RSS; the median of
`--repeats` runs counts (the machine may be shared). For scale, the same for the bare
interpreter (`python -c pass`) and for `python -c "import torch"`, the floor that PyTorch
sets; then `python -X importtime` of translate.py's module: import time by package.
Target: a median of at most 2.0 s. Output: a table, then one JSON line.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, child_env, git_state, log, print_table, run_measured

TARGET_S = 2.0
SENTENCE = "Ein Hund läuft.\n"


def timed_runs(cmd: list, work: Path, repeats: int, threads: int) -> dict[str, Any]:
    """Run `cmd` `repeats` times with the sentence on stdin: median wall s, peak RSS MiB."""
    stdin = work / "input.de"
    stdin.write_text(SENTENCE, encoding="utf-8")
    env = child_env(threads, ours=True)
    runs = [run_measured(cmd, work / "child.log", stdin=stdin, env=env) for _ in range(repeats)]
    walls = [r["wall_s"] for r in runs]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "others_cpu_s": sum(r["others_cpu_s"] for r in runs),
        "all_s": [round(w, 3) for w in walls],
    }


def import_times(work: Path, threads: int, top: int) -> list[tuple[str, float]]:
    """Seconds spent importing translate.py's module, by top-level package (the sum of
    its modules' own import times), costliest first."""
    cmd = [sys.executable, "-X", "importtime", "-c", "import seq2seq.cli.translate"]
    log_file = work / "importtime.log"
    run_measured(cmd, log_file, env=child_env(threads, ours=True))
    by_package: dict[str, float] = {}
    for line in log_file.read_text().splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + int(own) / 1e6
    return sorted(by_package.items(), key=lambda item: item[1], reverse=True)[:top]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=10, help="runs of each command; median counts")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "startup")
    args = p.parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    translate = [sys.executable, REPO / "scripts" / "translate.py"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import torch": [sys.executable, "-c", "import torch"],
        "translate.py --greedy": [
            *translate,
            "--checkpoint",
            args.checkpoint.resolve(),
            "--greedy",
        ],
    }
    figures: dict[str, Any] = {"code": git_state(), "checkpoint": str(args.checkpoint)}
    rows = []
    for name, cmd in commands.items():
        log(f"{name}: {args.repeats} runs")
        figures[name] = timed_runs(cmd, work, args.repeats, args.threads)
        f = figures[name]
        rows.append([name, f"{f['median_s']:.3f}", f"{f['min_s']:.3f}", f"{f['peak_rss_mib']:.0f}"])
    print_table(["command", "median s", "min s", "peak RSS MiB"], rows)
    imports = import_times(work, args.threads, top=8)
    print_table(
        ["package imported by translate.py", "own import s"],
        [[name, f"{s:.3f}"] for name, s in imports],
    )
    total, torch_floor = (
        figures["translate.py --greedy"]["median_s"],
        figures["import torch"]["median_s"],
    )
    figures["imports"] = dict(imports)
    figures["beyond_import_torch_s"] = round(total - torch_floor, 3)
    figures["target_met"] = total <= TARGET_S
    verdict = "met" if figures["target_met"] else "NOT met"
    print(
        f"translate.py start to exit: {total:.2f} s median (target {TARGET_S} s): {verdict}; "
        f"{total - torch_floor:.2f} s of it beyond `import torch` ({torch_floor:.2f} s)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
