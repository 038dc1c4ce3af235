"""What every benchmark here shares: the repository, text files, measured child processes,
runs kept between invocations."""

import argparse
import gzip
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def read_lines(path: Path, limit: int | None = None) -> list[str]:
    """Lines of a plain or gzip UTF-8 file, without newlines; the first `limit` if given."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()[:limit]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_test_set(work: Path, data_dir: Path) -> tuple[Path, list[str]]:
    """test_2016_flickr's German side written to `work/data/test.de`; -> that file and the
    English references."""
    (work / "data").mkdir(parents=True, exist_ok=True)
    test = data_dir / "test_2016_flickr"
    src = work / "data" / "test.de"
    write_lines(src, read_lines(Path(f"{test}.de.gz")))
    return src, read_lines(Path(f"{test}.en.gz"))


def translate_timed(checkpoints: list[str], src: str, hyp: str, **options: Any) -> None:
    """A benchmark's child process: translate `src` into `hyp` on the CPU with one model or
    an ensemble (`Translator.translate`'s `options`); print the decoding seconds as JSON."""
    from seq2seq.translator import Translator

    translator = Translator.from_checkpoints(checkpoints, device="cpu")
    sentences = read_lines(Path(src))
    start = time.perf_counter()
    hyps = translator.translate(sentences, **options)
    seconds = time.perf_counter() - start
    write_lines(Path(hyp), hyps)
    print(json.dumps({"decode_s": seconds}))


def child_env(threads: int, *, ours: bool) -> dict[str, str]:
    """Environment of a child: its thread count; ours imports this checkout's `seq2seq`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return {**env, "PYTHONPATH": str(REPO)} if ours else env


def cpu_snapshot() -> tuple[float, float]:
    """CPU seconds so far of the whole machine (all cores) and of this process's reaped children."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return machine, children.ru_utime + children.ru_stime


def others_cpu_since(snapshot: tuple[float, float]) -> float:
    """CPU seconds taken since `snapshot` by processes other than our children: 0 when idle."""
    machine, children = cpu_snapshot()
    return round(max(machine - snapshot[0] - (children - snapshot[1]), 0.0), 1)


def run_measured(
    cmd: list, log_file: Path, *, stdin: Path | None = None, stdout: Path | None = None, env=None
) -> dict[str, float]:
    """Run `cmd` to completion; -> its wall seconds and peak RSS (MiB), that process alone.

    Also `others_cpu_s`: CPU seconds that other processes took meanwhile (0 on an idle
    machine). Its stderr goes to `log_file`, and its stdout too unless `stdout` is given.
    """
    cmd, start, snapshot = [str(arg) for arg in cmd], time.perf_counter(), cpu_snapshot()
    with open(stdin or os.devnull, "rb") as fin, open(log_file, "wb") as ferr:
        fout = open(stdout, "wb") if stdout else ferr  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=ferr, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps it: rusage of this child alone
        fout.close()
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{tail}")
    rss = usage.ru_maxrss / 1024  # KiB on Linux
    return {"wall_s": wall, "peak_rss_mib": rss, "others_cpu_s": others_cpu_since(snapshot)}


def git_state() -> str:
    """This checkout's commit, with "+dirty" when `seq2seq/` differs from it."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "seq2seq"], capture_output=True)
    return head.stdout.strip() + ("+dirty" if dirty.returncode else "")


def train_ours(out: Path, config: Path, minutes: float, overrides: list[str]) -> dict[str, Any]:
    """Train `config` (with `overrides`) for `minutes` of wall time into `out` (emptied
    first); -> its last checkpoint and the CPU seconds others took meanwhile."""
    seconds = round(minutes * 60)
    max_time = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    cmd = [sys.executable, "scripts/train.py", "--config", str(config), *overrides]
    cmd += ["--trainer.max_time", max_time, "--trainer.enable_progress_bar", "false"]
    cmd += ["--checkpoint.dirpath", out / "checkpoints", "--trainer.default_root_dir", out]
    cmd += ["--trainer.logger.init_args.save_dir", out]
    log(f"training ours ({config.name}) for {max_time} (log: {out}/train.log)")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    measured = run_measured(cmd, out / "train.log", env={**os.environ, "PYTHONPATH": str(REPO)})
    return {"checkpoint": out / "checkpoints" / "last.ckpt", **measured}


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Right-aligned columns, the header first."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def saved_or_new(run: Path, args: argparse.Namespace, make: Callable[[], dict]) -> dict:
    """The figures that a former invocation saved in `run` for as many minutes (its code
    named in them), unless `--retrain`; else `make()`'s, saved there. So the comparison can
    be made in pieces: `--seeds 1`, then `--seeds 1 2 3` trains only seeds 2 and 3."""
    saved = run / "result.json"
    if saved.exists() and not args.retrain:
        result = json.loads(saved.read_text())
        if result["minutes"] == args.minutes:
            log(f"{run.name}: reusing its run of {args.minutes:g} minutes (code {result['code']})")
            return result
    result = make() | {"minutes": args.minutes, "code": args.code}
    saved.write_text(json.dumps(result, default=str))
    return result


def score(hyp_file: Path, refs: list[str]) -> dict[str, Any]:
    """sacrebleu BLEU and chrF of `hyp_file` against `refs`, with their signatures."""
    from seq2seq.metrics import corpus_scores

    hyps = read_lines(hyp_file)
    assert len(hyps) == len(refs), f"{hyp_file}: {len(hyps)} lines for {len(refs)} references"
    bleu, chrf = corpus_scores(hyps, [refs], metrics=("bleu", "chrf"))
    return {
        "bleu": round(bleu.score, 2),
        "chrf": round(chrf.score, 2),
        "bleu_signature": bleu.signature,
        "chrf_signature": chrf.signature,
    }


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def export_baseline(rev: str, work: Path) -> tuple[str, Path]:
    """This repository's `seq2seq/` and `benchmarks/` at `rev`, extracted under `work`:
    -> (its short commit, the folder)."""
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    root = work / f"baseline-{commit}"
    if not (root / "seq2seq").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            [*git, "archive", commit, "seq2seq", "benchmarks"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return commit, root
