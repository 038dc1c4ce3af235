"""Data preparation at scale: corpora of 1M and 10M pairs through SentencePiece, the
Arrow cache and the start of training.

    python benchmarks/corpus_scale.py                          # 1M and 10M pairs
    python benchmarks/corpus_scale.py --pairs 200000 1000000   # smaller

Each corpus is Multi30k train repeated, each copy's lines varied (the copy number
appended to both sides, so that no two lines are identical), written once under
the work directory. Each run is a fresh process through `scripts/train.py`'s CLI
(configs/multi30k_gru_luong_additive.yaml with this corpus as `data.train`, a cache
folder of its own) that trains `--steps` updates:

1. cold: SentencePiece trains on a sample (`data.spm_input_sentence_size`, 500k
   sentences by default), the corpus is tokenized into the Arrow cache (one
   process: `data.num_proc` 1), then training starts; the cache's size on disk
   is measured after it;
2. warm: the same command again, reusing the cache: the time from process start
   to the first training batch is the cached restart;
3. the Multi30k corpus itself (29k pairs), cold then warm: its warm peak RSS
   against the largest corpus's shows whether training memory depends on corpus
   size (it should not: the Arrow cache is memory-mapped, never copied into lists).

Peak RSS is each process's `ru_maxrss`; beside it the peaks of its anonymous and of
its file-backed resident pages, sampled every 50 ms (`RssSampler`): memory-mapped
Arrow files count in RSS, but as page cache that the kernel takes back when memory is
short. The targets count the preparation: its peak is the sum of the two peaks
sampled until the data is ready (an upper bound of its RSS), at most 1.5 GiB for the
largest corpus and 1.2x the smallest's; and the largest corpus's cached restart, at
most 15 s. Output: a table, the targets, then one JSON line.
"""

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (
    MULTI30K,
    REPO,
    child_env,
    git_state,
    log,
    print_table,
    read_lines,
    run_measured,
    status_mib,
)

CONFIG = REPO / "configs" / "multi30k_gru_luong_additive.yaml"
TARGETS = {"cold_peak_rss_mib": 1536, "cold_peak_growth": 1.2, "cached_restart_s": 15.0}


# -- in a child process -----------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Samples this process's resident memory every 50 ms: the peaks of its anonymous
    pages (the heap: Python objects, tensors, buffers) and of its file-backed pages
    (memory-mapped files, Arrow's among them, and shared libraries), which `ru_maxrss`
    counts together. File pages are the page cache's, given back under memory pressure."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks = {"RssAnon": 0.0, "RssFile": 0.0}  # MiB

    def run(self) -> None:
        while True:
            for key, mib in status_mib("self", tuple(self.peaks)).items():
                self.peaks[key] = max(self.peaks[key], mib)
            time.sleep(0.05)

    def mib(self) -> dict[str, float]:
        return {"peak_anon_mib": self.peaks["RssAnon"], "peak_file_mib": self.peaks["RssFile"]}


def run_child(train_prefix: str, cache_dir: str, steps: str, out_dir: str, launched: str) -> None:
    """Prepare the data (or reuse its cache) and train `steps` updates; print JSON timings
    and memory peaks, those of the preparation apart."""
    from benchmarks.training_child import StepClock, short_run

    sampler = RssSampler()
    sampler.start()
    start = time.perf_counter()
    overrides = ["--data.train", train_prefix, "--data.cache_dir", cache_dir]
    cli = short_run(str(CONFIG), out_dir, int(steps), overrides)  # SentencePiece ready
    tokenizer_s = time.perf_counter() - start
    start = time.perf_counter()
    cli.datamodule.prepare_data()  # the Arrow cache of each split
    cli.datamodule.setup("fit")  # `fit` does both again: the caches are then reused
    prepare_s = time.perf_counter() - start
    prepared = {f"prepare_{key}": value for key, value in sampler.mib().items()}
    clock = StepClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    figures = {
        "pairs": len(cli.datamodule.train_dataset),
        "tokenizer_s": tokenizer_s,
        "prepare_s": prepare_s,
        "first_batch_s": clock.starts[0] - time.perf_counter() + time.time() - float(launched),
        "steps": len(clock.starts),
        **prepared,
        **sampler.mib(),
    }
    print(json.dumps(figures))


# -- the parent -------------------------------------------------------------------------------


def build_corpus(prefix: Path, pairs: int, data_dir: Path) -> None:
    """`prefix`.de/.en: Multi30k train repeated to `pairs` lines, copy k's lines ending " k"."""
    if all(_line_count(prefix.with_suffix(f".{lang}")) == pairs for lang in ("de", "en")):
        log(f"reusing {prefix}.de/.en ({pairs} pairs)")
        return
    log(f"writing {pairs} pairs to {prefix}.de/.en")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for lang in ("de", "en"):
        base = read_lines(data_dir / f"train.{lang}.gz")
        tmp = prefix.with_suffix(f".{lang}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for i in range(pairs):
                copy, line = divmod(i, len(base))
                f.write(f"{base[line]} {copy}\n" if copy else f"{base[line]}\n")
        tmp.replace(prefix.with_suffix(f".{lang}"))


def _line_count(path: Path) -> int:
    if not path.exists():
        return -1
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def run(name: str, train_prefix: Path, cache: Path, work: Path, args) -> dict[str, Any]:
    out = work / "runs" / name
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "_run", train_prefix, cache, args.steps, out, time.time()]
    log(f"{name}: preparing {train_prefix.name} (cache {cache.name}) and training {args.steps}")
    env = child_env(args.threads, ours=True)
    measured = run_measured(cmd, out / "stderr.log", stdout=out / "stdout.log", env=env)
    last_line = (out / "stdout.log").read_text().strip().splitlines()[-1]
    return {"run": name, **json.loads(last_line), **measured}


def report(runs: list[dict], sizes: list[int], extra: dict) -> None:
    header = ["run", "pairs", "tokenizer s", "prepare s", "pairs/s", "first batch s", "wall s"]
    header += ["prep peak MiB", "peak RSS MiB", "anon MiB", "file MiB", "cache MiB/M pairs"]
    rows = []
    for r in runs:
        r["pairs_per_s"] = r["pairs"] / r["prepare_s"]
        r["prepare_peak_mib"] = r["prepare_peak_anon_mib"] + r["prepare_peak_file_mib"]
        times = [r["tokenizer_s"], r["prepare_s"], r["pairs_per_s"], r["first_batch_s"]]
        cells = [f"{x:.1f}" for x in [*times, r["wall_s"]]]
        keys = ("prepare_peak_mib", "peak_rss_mib", "peak_anon_mib", "peak_file_mib")
        disk = f"{r['cache_mib'] / r['pairs'] * 1e6:.0f}" if "cache_mib" in r else "-"
        rows.append([r["run"], str(r["pairs"]), *cells, *(f"{r[k]:.0f}" for k in keys), disk])
    print_table(header, rows)
    by = {r["run"]: r for r in runs}
    small, large = by[f"{min(sizes)} cold"], by[f"{max(sizes)} cold"]
    peak = large["prepare_peak_mib"]
    growth = peak / small["prepare_peak_mib"]
    restart = by[f"{max(sizes)} warm"]["first_batch_s"]
    trained = by[f"{max(sizes)} warm"]["peak_anon_mib"] - by["multi30k warm"]["peak_anon_mib"]
    verdicts = {
        "cold_peak_rss": peak <= TARGETS["cold_peak_rss_mib"],
        "cold_peak_growth": growth <= TARGETS["cold_peak_growth"],
        "cached_restart": restart <= TARGETS["cached_restart_s"],
    }
    lines = [
        f"cold preparation peak RSS (anonymous + file-backed peaks) at {large['pairs']} "
        f"pairs: {peak:.0f} MiB (target <= {TARGETS['cold_peak_rss_mib']})",
        f"cold preparation peak RSS, {large['pairs']} over {small['pairs']} pairs: "
        f"{growth:.2f}x (target <= {TARGETS['cold_peak_growth']:g}x)",
        f"cached restart to the first training batch at {large['pairs']} pairs: {restart:.1f} s "
        f"(target <= {TARGETS['cached_restart_s']:g})",
    ]
    for line, ok in zip(lines, verdicts.values(), strict=True):
        print(f"{line}: {'met' if ok else 'NOT met'}")
    print(
        f"training's anonymous peak, {large['pairs']} pairs minus Multi30k's: {trained:+.0f} MiB "
        "(file-backed pages grow as batches read the memory-mapped cache: page cache)"
    )
    figures = {"runs": runs, "cold_prepare_peak_mib": round(peak), "growth": round(growth, 2)}
    figures |= {"cached_restart_s": round(restart, 1), "training_anon_growth_mib": trained}
    print(json.dumps(figures | {"targets_met": verdicts} | extra, default=str))


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "corpus_scale")
    p.add_argument("--data-dir", type=Path, default=MULTI30K)
    p.add_argument("--pairs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--steps", type=int, default=10, help="training updates of each run")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    work = args.work_dir.resolve()
    sizes = sorted(args.pairs)
    runs = []
    for pairs in sizes:
        corpus, cache = work / "corpus" / f"train-{pairs}", work / f"cache-{pairs}"
        build_corpus(corpus, pairs, args.data_dir)
        shutil.rmtree(cache, ignore_errors=True)  # the cold run starts from nothing
        runs.append(run(f"{pairs} cold", corpus, cache, work, args))
        runs[-1]["cache_mib"] = folder_mib(cache)
        runs.append(run(f"{pairs} warm", corpus, cache, work, args))
    shutil.rmtree(work / "cache-multi30k", ignore_errors=True)
    for name in ("multi30k cold", "multi30k warm"):
        runs.append(run(name, args.data_dir / "train", work / "cache-multi30k", work, args))
    report(runs, sizes, {"threads": args.threads, "steps": args.steps, "code": git_state()})


if __name__ == "__main__":
    if sys.argv[1:2] == ["_run"]:
        run_child(*sys.argv[2:])
    else:
        main()
