"""The benchmarks' one harness: the repository and its text files, child processes timed
with their peak RSS and the CPU that other processes took meanwhile, a decoding child,
runs kept between invocations, scores, tables and the closing JSON line.

    python benchmarks/common.py _translate SRC HYP OPTIONS_JSON CKPT...   # the decoding child
"""

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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

REPO = Path(__file__).resolve().parents[1]
MULTI30K = REPO / "data" / "multi30k"  # python scripts/get_data.py multi30k


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def corpus_file(prefix: Path, lang: str) -> Path:
    """`prefix.lang.gz` where it exists, else `prefix.lang`."""
    packed = Path(f"{prefix}.{lang}.gz")
    return packed if packed.exists() else Path(f"{prefix}.{lang}")


def read_lines(path: Path, limit: int | None = None) -> list[str]:
    """Lines of a plain or gzip UTF-8 file, without newlines; the first `limit` if given."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()[:limit]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_test_set(work: Path, prefix: Path, limit: int | None = None) -> tuple[Path, list[str]]:
    """The German side of the test set `prefix` written to `work/test.de` (plain text, as
    the translators read it); -> that file and the English references."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / "test.de"
    write_lines(src, read_lines(corpus_file(prefix, "de"), limit))
    return src, read_lines(corpus_file(prefix, "en"), limit)


def child_env(threads: int | None, *, ours: bool = True) -> dict[str, str]:
    """A child's environment: `threads` OpenMP and MKL threads (None: as inherited); ours
    imports this checkout's `seq2seq`."""
    env = dict(os.environ)
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return env | {"PYTHONPATH": str(REPO)} if ours else env


def status_mib(pid: int | str, keys: tuple[str, ...]) -> dict[str, float]:
    """Memory fields (`VmRSS`, `VmHWM`, ...) of /proc/PID/status in MiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {key: int(fields[key].split()[0]) / 1024 for key in keys}


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


@dataclass
class Job:
    """A child process for `run_together`: its command, files, environment, and the CPU
    cores it may run on (None: any)."""

    cmd: list
    log_file: Path
    stdin: Path | None = None
    stdout: Path | None = None
    env: dict[str, str] | None = None
    cores: set[int] | None = None


def run_measured(
    cmd: list, log_file: Path, *, stdin: Path | None = None, stdout: Path | None = None, env=None
) -> dict[str, float]:
    """Run `cmd` to completion: `run_together` with one job."""
    return run_together([Job(cmd, log_file, stdin=stdin, stdout=stdout, env=env)])[0]


def run_together(jobs: list[Job]) -> list[dict[str, float]]:
    """Start every job at once and wait for all; -> per job its wall seconds and peak RSS
    (MiB, `ru_maxrss` of it alone), and `others_cpu_s`: CPU seconds taken meanwhile by
    processes other than these (0 on an idle machine). A job's stderr goes to its log
    file, and its stdout too unless it names one. When one fails, the others are
    stopped, and it raises with the log of the first that failed."""
    start, snapshot = time.perf_counter(), cpu_snapshot()
    with ExitStack() as files:
        procs: list[subprocess.Popen] = []
        try:
            for job in jobs:
                procs.append(_start(job, files))
            ended = _reaped(procs)
        finally:
            for proc in procs:
                if proc.returncode is None:  # `_start` or `_reaped` raised: none left behind
                    proc.kill()
                    proc.wait()
    others = others_cpu_since(snapshot)
    failed = [i for i, proc in enumerate(procs) if proc.returncode != 0]
    if failed:
        job = jobs[min(failed, key=lambda i: ended[i][0])]
        tail = job.log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(map(str, job.cmd[:4]))} ... failed:\n{tail}")
    return [
        {"wall_s": end - start, "peak_rss_mib": usage.ru_maxrss / 1024, "others_cpu_s": others}
        for end, usage in ended  # ru_maxrss: KiB on Linux
    ]


def _start(job: Job, files: ExitStack) -> subprocess.Popen:
    def opened(path: Path, mode: str) -> BinaryIO:
        return files.enter_context(open(path, mode))

    fin = opened(job.stdin or Path(os.devnull), "rb")
    ferr = opened(job.log_file, "wb")
    fout = opened(job.stdout, "wb") if job.stdout else ferr
    cmd = [str(arg) for arg in job.cmd]
    proc = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=ferr, env=job.env, cwd=REPO)
    if job.cores is not None:  # before the child's interpreter has started a thread
        os.sched_setaffinity(proc.pid, job.cores)
    return proc


def _reaped(procs: list[subprocess.Popen]) -> list[tuple[float, resource.struct_rusage]]:
    """Wait for every process; -> per process its end time and rusage (it alone). The first
    that fails stops the others. The last one left is waited for without polling."""
    ended: dict[int, tuple[float, resource.struct_rusage]] = {}
    while len(ended) < len(procs):
        waiting = [i for i in range(len(procs)) if i not in ended]
        for i in waiting:
            pid, status, usage = os.wait4(procs[i].pid, 0 if len(waiting) == 1 else os.WNOHANG)
            if pid == 0:
                continue
            procs[i].returncode = os.waitstatus_to_exitcode(status)
            ended[i] = (time.perf_counter(), usage)
            if procs[i].returncode != 0:
                for other in procs:
                    if other.returncode is None:
                        other.terminate()
        if len(ended) < len(procs) - 1:
            time.sleep(0.05)
    return [ended[i] for i in range(len(procs))]


def git_state() -> str:
    """This checkout's commit, with "+dirty" when `seq2seq/` differs from it."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "seq2seq"], capture_output=True)
    return head.stdout.strip() + ("+dirty" if dirty.returncode else "")


def training_job(out: Path, config: Path, minutes: float, overrides: list) -> Job:
    """`scripts/train.py` training `config` (with `overrides`) for `minutes` of wall time
    into `out`, emptied here; its last checkpoint will be `out/checkpoints/last.ckpt`."""
    seconds = round(minutes * 60)
    max_time = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    cmd = [sys.executable, "scripts/train.py", "--config", config, *overrides]
    cmd += ["--trainer.max_time", max_time, "--trainer.enable_progress_bar", "false"]
    cmd += ["--trainer.default_root_dir", out]  # its checkpoints/ and CSV log there
    log(f"training {config.name} for {max_time} (log: {out}/train.log)")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return Job(cmd, out / "train.log", env=child_env(None))


def train_ours(out: Path, config: Path, minutes: float, overrides: list) -> dict[str, Any]:
    """`training_job` run; -> its last checkpoint, wall seconds, peak RSS, others' CPU."""
    job = training_job(out, config, minutes, overrides)
    measured = run_measured(job.cmd, job.log_file, env=job.env)
    return {"checkpoint": out / "checkpoints" / "last.ckpt", **measured}


def translate_child(src: str, hyp: str, options: str, *checkpoints: str) -> None:
    """In a fresh process: translate `src` into `hyp` on the CPU with one model or an
    ensemble (`Translator.translate`'s `options`, JSON, with `from_checkpoints`'s `quantize`
    and `shortlist`); print the decoding seconds as JSON, model loading excluded."""
    from seq2seq.translator import Translator

    decoding = json.loads(options)
    loading = {key: decoding.pop(key) for key in ("quantize", "shortlist") if key in decoding}
    translator = Translator.from_checkpoints(checkpoints, device="cpu", **loading)
    sentences = read_lines(Path(src))
    start = time.perf_counter()
    hyps = translator.translate(sentences, **decoding)
    seconds = time.perf_counter() - start
    write_lines(Path(hyp), hyps)
    print(json.dumps({"decode_s": seconds}))


def translated(
    checkpoints: list[Path], src: Path, out: Path, threads: int | None, **options: Any
) -> dict[str, Any]:
    """`checkpoints` (one model, or an ensemble) translating `src` into `out/hyp.en` in a
    fresh process (`translate_child`); -> its decoding seconds, wall seconds, peak RSS."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "_translate", src, out / "hyp.en", json.dumps(options)]
    env = child_env(threads)
    measured = run_measured([*cmd, *checkpoints], out / "stderr.log", stdout=out / "out", env=env)
    return json.loads((out / "out").read_text()) | measured


def kept(run: Path, key: dict, retrain: bool = False) -> dict | None:
    """The figures a former invocation saved in `run/result.json` under the same `key`
    (the settings they depend on), unless `retrain`; else None."""
    path = run / "result.json"
    if retrain or not path.exists():
        return None
    result = json.loads(path.read_text())
    if result.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    log(f"{run.name}: kept from a former invocation (code {result.get('code')})")
    return result


def save(run: Path, key: dict, figures: dict) -> dict:
    """`figures` with `key`, saved in `run/result.json` for `kept`."""
    result = figures | {"key": key}
    (run / "result.json").write_text(json.dumps(result, default=str))
    return json.loads(json.dumps(result, default=str))


def kept_or_made(run: Path, key: dict, make: Callable[[], dict], retrain: bool = False) -> dict:
    """`kept`'s figures, else `make()`'s, saved: so that a comparison can be made in
    pieces (`--seeds 1`, then `--seeds 1 2 3` trains only seeds 2 and 3)."""
    return kept(run, key, retrain) or save(run, key, make())


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
    """Mean and sample standard deviation (None for a single value), rounded to 2 places."""
    sd = round(statistics.stdev(values), 2) if len(values) > 1 else None
    return round(statistics.mean(values), 2), sd


def mean_sd_text(mean: float | None, sd: float | None, signed: bool = False) -> str:
    if mean is None:
        return "-"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if sd is None else f"{text} ± {sd:.2f}"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Right-aligned columns, the header first."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def print_json(figures: dict) -> None:
    """The last line of every benchmark: every figure and setting, one JSON object."""
    print(json.dumps(figures, default=str))


if __name__ == "__main__" and sys.argv[1:2] == ["_translate"]:
    translate_child(*sys.argv[2:])
