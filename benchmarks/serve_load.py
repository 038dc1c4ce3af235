"""The translation server under load: throughput, latency, errors, equal outputs, memory.

    python benchmarks/serve_load.py --checkpoint runs/multi30k_gru_luong_additive/checkpoints/best.ckpt
    python benchmarks/serve_load.py --checkpoint CKPT --quick    # a smoke run: 40 sentences

scripts/serve.py runs on the loopback address, with cross-request batching and then
with --no-batching; Multi30k test_2016_flickr (1000 sentences) is replayed one sentence
a request from 1, 8, 32 and 128 concurrent clients (keep-alive connections, threads of
this process), greedily and with beam 5. Each run stops after its sentences or after
--max-seconds. Reported: sentences/s, p50/p95/p99 latency, errors, the mean batch the
server decoded, and whether every output equals scripts/translate.py's for the same
sentences. translate.py's offline sentences/s (decoding alone, model loading excluded,
in a fresh process) is the reference. Memory: a fresh batched server's peak RSS
(VmHWM) after 1,000 and after 10,000 requests. A table, the targets, one JSON line.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from itertools import product
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import MULTI30K, REPO, git_state, log, print_table, read_lines, write_lines
from benchmarks.serve_harness import health, medians, memory_mib, replay, running_server, summarize

TRANSLATE = REPO / "scripts" / "translate.py"
MODES = {"greedy": {"greedy": True}, "beam": {"beam_size": 5}}
BEAMS = {"greedy": 1, "beam": 5}
TARGETS = {"vs_unbatched": 5.0, "vs_offline": 0.6, "p99_ms": 1000.0, "rss_growth_mib": 50.0}
TARGET_CLIENTS = 32


# -- the load runs ---------------------------------------------------------------------------


def load_run(
    port: int,
    sentences: list[str],
    references: list[str],
    mode: str,
    clients: int,
    total: int,
    seconds: float,
) -> dict[str, Any]:
    before = health(port)
    start = time.perf_counter()
    results = replay(port, sentences, MODES[mode], clients, total, seconds)
    wall = time.perf_counter() - start
    after = health(port)
    batches = after["batches"] - before["batches"]
    mean_batch = (after["decoded"] - before["decoded"]) / max(batches, 1)
    run = {"mode": mode, "clients": clients, "wall_s": round(wall, 2)}
    return run | summarize(results, wall, references) | {"mean_batch": round(mean_batch, 2)}


# -- offline: translate.py -------------------------------------------------------------------


def offline_child(ckpt: str, src: str, hyp: str, beam: str) -> None:
    """In a fresh process: decode as translate.py does, timing the decoding alone; then
    again in calls of TARGET_CLIENTS sentences in input order, the batches that one-sentence
    requests from that many clients make at best."""
    from seq2seq.translator import Translator

    translator = Translator.from_checkpoint(ckpt, device="cpu")
    sentences = read_lines(Path(src))
    start = time.perf_counter()
    outputs = translator.translate(sentences, beam_size=int(beam))
    seconds = time.perf_counter() - start
    write_lines(Path(hyp), outputs)
    start = time.perf_counter()
    for first in range(0, len(sentences), TARGET_CLIENTS):
        translator.translate(sentences[first : first + TARGET_CLIENTS], beam_size=int(beam))
    print(json.dumps({"decode_s": seconds, "client_batches_s": time.perf_counter() - start}))


def offline(
    ckpt: Path, src: Path, work: Path, mode: str, env: dict, repeats: int
) -> dict[str, Any]:
    """translate.py's outputs (the references), and its decoding speed: the median of
    `repeats` fresh processes."""
    out = work / f"translate-{mode}.en"
    flags = ["--greedy"] if mode == "greedy" else ["--beam-size", str(BEAMS[mode])]
    cmd = [sys.executable, TRANSLATE, "--checkpoint", ckpt, "--input", src, "--output", out]
    start = time.perf_counter()
    with open(work / f"translate-{mode}.log", "wb") as stderr:
        command = [str(a) for a in [*cmd, *flags, "--device", "cpu"]]
        subprocess.run(command, check=True, env=env, stderr=stderr)
    wall = time.perf_counter() - start
    timed = work / f"offline-{mode}.en"
    child = [str(a) for a in [sys.executable, __file__, "_offline", ckpt, src, timed, BEAMS[mode]]]
    runs = [subprocess.run(child, check=True, env=env, capture_output=True) for _ in range(repeats)]
    timings = [json.loads(done.stdout.decode().strip().splitlines()[-1]) for done in runs]
    decode_s = statistics.median(t["decode_s"] for t in timings)
    client_batches_s = statistics.median(t["client_batches_s"] for t in timings)
    references, lines = read_lines(out), len(read_lines(src))
    return {
        "mode": mode,
        "references": references,
        "translate_py_wall_s": round(wall, 2),
        "decode_s": round(decode_s, 2),
        "sent_per_s": round(lines / decode_s, 1),
        "client_batches_sent_per_s": round(lines / client_batches_s, 1),
        "same_as_translate_py": read_lines(timed) == references,
    }


# -- the benchmark ---------------------------------------------------------------------------


def load_table(
    ckpt: Path, sentences: list[str], refs: dict, work: Path, args, env: dict
) -> tuple[list[dict], dict]:
    """Every (batching, mode, clients) run, `args.repeats` times (the batched and the
    unbatched server take turns, so that a drifting machine favours neither), and whether
    each server exited 0 every time."""
    runs, exits = [], {}
    for repeat, batching in product(range(args.repeats), (True, False)):
        name = "batched" if batching else "unbatched"
        with running_server(
            ckpt, work / f"serve-{name}.log", batching, env, args.server_options
        ) as server:
            for mode in args.modes:
                for clients in args.clients:
                    log(f"{name}, {mode}, {clients} client(s): {len(sentences)} requests")
                    run = load_run(
                        server["port"],
                        sentences,
                        refs[mode],
                        mode,
                        clients,
                        len(sentences),
                        args.max_seconds,
                    )
                    runs.append({"server": name, "repeat": repeat, **run})
        exits[name] = exits.get(name, 0) or server["exit_code"]
    return runs, exits


def memory_run(ckpt: Path, sentences: list[str], refs: dict, work: Path, args, env) -> dict:
    """A fresh batched server's memory after the first N1 requests and after N2 in all."""
    first, total = args.rss_requests
    found: dict[str, Any] = {"requests": [first, total]}
    with running_server(ckpt, work / "serve-memory.log", True, env, args.server_options) as server:
        for label, count in (("first", first), ("total", total - first)):
            log(f"memory: {count} requests from {TARGET_CLIENTS} clients, greedy")
            run = load_run(
                server["port"],
                sentences,
                refs["greedy"],
                "greedy",
                TARGET_CLIENTS,
                count,
                args.max_seconds * 10,
            )
            found[label] = {
                **memory_mib(server["pid"]),
                "errors": run["errors"],
                "identical": run["identical"],
            }
    # The peak may have been set while loading the model: the current RSS is watched too.
    found["growth_mib"] = round(found["total"]["VmHWM"] - found["first"]["VmHWM"], 1)
    found["rss_growth_mib"] = round(found["total"]["VmRSS"] - found["first"]["VmRSS"], 1)
    found["exit_code"] = server["exit_code"]
    return found


def verdicts(runs: list[dict], offline_runs: dict, memory: dict) -> dict[str, bool]:
    """The issue's targets at 32 clients, per mode; errors and equality over every run."""
    met = {}
    by = {(r["server"], r["mode"], r["clients"]): r for r in runs}
    for mode, off in offline_runs.items():
        batched, unbatched = by.get(("batched", mode, 32)), by.get(("unbatched", mode, 32))
        if batched and unbatched:
            speedup = batched["sent_per_s"] / max(unbatched["sent_per_s"], 1e-9)
            met[f"{mode}: batched >= 5x unbatched"] = speedup >= TARGETS["vs_unbatched"]
            share = batched["sent_per_s"] / off["sent_per_s"]
            met[f"{mode}: batched >= 60% of offline"] = share >= TARGETS["vs_offline"]
            met[f"{mode}: p99 <= 1 s"] = batched["p99_ms"] <= TARGETS["p99_ms"]
    met["zero errors"] = all(r["errors"] == 0 and r["not_sent"] == 0 for r in runs)
    met["outputs identical to translate.py"] = all(r["identical"] for r in runs)
    if memory:
        growth = max(memory["growth_mib"], memory["rss_growth_mib"])
        met["peak and current RSS growth <= 50 MiB"] = growth <= TARGETS["rss_growth_mib"]
    return met


def report(runs: list[dict], offline_runs: dict, memory: dict, extra: dict) -> None:
    header = ["server", "mode", "clients", "sent/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    header += ["mean batch", "identical"]
    keys = ["sent_per_s", "p50_ms", "p95_ms", "p99_ms", "errors", "mean_batch", "identical"]
    rows = [[r["server"], r["mode"], str(r["clients"]), *(str(r[k]) for k in keys)] for r in runs]
    rows += [
        ["offline", mode, "-", str(o["sent_per_s"]), *["-"] * 5, str(o["same_as_translate_py"])]
        for mode, o in offline_runs.items()
    ]
    rows += [
        [f"offline, {TARGET_CLIENTS} a call", mode, "-", str(o["client_batches_sent_per_s"])]
        + ["-"] * 6
        for mode, o in offline_runs.items()
    ]
    print_table(header, rows)
    for r in (r for r in runs if "sent_per_s_runs" in r):
        print(f"{r['server']}, {r['mode']}, {r['clients']}: sent/s {r['sent_per_s_runs']}")
    for mode, o in offline_runs.items():
        ceiling = o["client_batches_sent_per_s"] / o["sent_per_s"]
        print(
            f"{mode}: offline in calls of {TARGET_CLIENTS} sentences runs at {ceiling:.0%} of "
            f"offline: the most a server reaches with {TARGET_CLIENTS} one-sentence clients"
        )
    if memory:
        first, total = memory["requests"]
        print(
            f"peak RSS: {memory['first']['VmHWM']:.1f} MiB after {first} requests, "
            f"{memory['total']['VmHWM']:.1f} MiB after {total}: +{memory['growth_mib']} MiB "
            f"(current RSS +{memory['rss_growth_mib']} MiB)"
        )
    met = verdicts(runs, offline_runs, memory)
    for target, ok in met.items():
        print(f"{target}: {'met' if ok else 'NOT met'}")
    offline_json = {
        mode: {k: v for k, v in o.items() if k != "references"} for mode, o in offline_runs.items()
    }
    print(
        json.dumps(
            {"runs": runs, "offline": offline_json, "memory": memory, "targets_met": met} | extra
        )
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument(
        "--source",
        type=Path,
        default=MULTI30K / "test_2016_flickr.de.gz",
        help="sentences to replay (default Multi30k test_2016_flickr.de.gz)",
    )
    p.add_argument("--limit", type=int, help="the first N sentences only")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument(
        "--rss-requests",
        type=int,
        nargs=2,
        default=[1000, 10000],
        metavar=("FIRST", "TOTAL"),
        help="memory after FIRST and TOTAL requests",
    )
    p.add_argument("--max-seconds", type=float, default=600, help="per load run (default 600)")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each cell and of offline decoding; the table shows medians (default 1)",
    )
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server and translate.py")
    p.add_argument(
        "--server-options",
        default="",
        help='more options of both servers, one string (e.g. "--batch-window-ms 10")',
    )
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "serve_load")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 40 sentences, 1 and 8 clients, memory at 100 and 400",
    )
    args = p.parse_args()
    args.server_options = args.server_options.split()
    if args.quick:
        args.limit, args.clients, args.rss_requests = 40, [1, 8], [100, 400]
    return args


def main() -> None:
    args = parse_args()
    code = git_state()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint.resolve()
    sentences = read_lines(args.source, args.limit)
    src = work / "source.txt"
    write_lines(src, sentences)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if args.threads:
        env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    offline_runs = {}
    for mode in args.modes:
        log(f"translate.py offline, {mode}: {len(sentences)} sentences")
        offline_runs[mode] = offline(ckpt, src, work, mode, env, args.repeats)
    refs = {mode: o["references"] for mode, o in offline_runs.items()}
    runs, exits = load_table(ckpt, sentences, refs, work, args, env)
    runs = medians(runs) if args.repeats > 1 else runs
    memory = memory_run(ckpt, sentences, refs, work, args, env) if "greedy" in refs else {}
    extra = {"code": code, "checkpoint": str(ckpt), "sentences": len(sentences)}
    extra |= {"server_exit_codes": exits, "threads": args.threads, "cpus": os.cpu_count()}
    extra |= {"server_options": args.server_options}
    report(runs, offline_runs, memory, extra)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_offline"]:
        offline_child(*sys.argv[2:6])
    else:
        main()
