"""The translation server under load: throughput, latency, errors, equal outputs, memory.

    python benchmarks/serve_load.py --checkpoint CKPT           # about 6 minutes on 2 cores
    python benchmarks/serve_load.py --checkpoint CKPT --quick   # a smoke run: 40 sentences
    python benchmarks/serve_load.py --checkpoint CKPT --clients 32 \
        --fast-options "--quantize int8 --shortlist LEX.pt"     # faster decoding, served

scripts/serve.py runs on the loopback address, with cross-request batching and then
with --no-batching; Multi30k test_2016_flickr (1000 sentences) is replayed one sentence
a request from 1, 8, 32 and 128 concurrent clients (keep-alive connections, threads of
this process), greedily and with beam 5. Each run stops after its sentences or after
--max-seconds. Reported: sentences/s, p50/p95/p99 latency, errors, the mean batch the
server decoded, and whether every output equals scripts/translate.py's for the same
sentences. translate.py's offline sentences/s (decoding alone, in a fresh process) is
the reference, and offline in calls of 32 sentences the most that 32 one-sentence
clients can get. Memory: a fresh batched server's peak (VmHWM) and current (VmRSS)
RSS after 1,000 and after 10,000 requests. With --fast-options (serve.py's --quantize,
--shortlist), a third server, batched with those options, takes 32 clients in its turn,
its outputs compared with translate.py's under the same options, and its sentences/s
set against the batched server's. A table, the targets, one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import time
from itertools import product
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common
from benchmarks.serve_harness import health, medians, replay, running_server, summarize

MODES = {"greedy": {"greedy": True}, "beam": {"beam_size": 5}}  # request options
BEAMS = {"greedy": 1, "beam": 5}
TARGETS = {"vs_client_batches": 0.9, "p99_ms": 1000.0, "rss_growth_mib": 50.0}
TARGET_CLIENTS = 32
FAST = "batched, fast options"  # the server with --fast-options


def load_run(
    port: int, sentences: list[str], refs: list[str], mode: str, clients: int, total, seconds: float
) -> dict[str, Any]:
    """`total` requests from `clients` clients in `mode`, for at most `seconds`: their
    summary and the mean batch."""
    before, start = health(port), time.perf_counter()
    results = replay(port, sentences, MODES[mode], clients, total, seconds)
    wall, after = time.perf_counter() - start, health(port)
    mean_batch = (after["decoded"] - before["decoded"]) / max(
        after["batches"] - before["batches"], 1
    )
    run = {"mode": mode, "clients": clients, "wall_s": round(wall, 2)}
    return run | summarize(results, wall, refs) | {"mean_batch": round(mean_batch, 2)}


def offline_child(ckpt: str, src: str, hyp: str, beam: str) -> None:
    """In a fresh process: decode as translate.py does, timing the decoding alone; then
    again in calls of TARGET_CLIENTS sentences in input order, the batches that
    one-sentence requests from that many clients make at best."""
    from seq2seq.translator import Translator

    translator = Translator.from_checkpoint(ckpt, device="cpu")
    sentences = common.read_lines(Path(src))
    start = time.perf_counter()
    common.write_lines(Path(hyp), translator.translate(sentences, beam_size=int(beam)))
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    for first in range(0, len(sentences), TARGET_CLIENTS):
        translator.translate(sentences[first : first + TARGET_CLIENTS], beam_size=int(beam))
    print(json.dumps({"decode_s": seconds, "client_batches_s": time.perf_counter() - start}))


def translate_py(ckpt: Path, src: Path, out: Path, mode: str, env: dict, options: list) -> dict:
    """scripts/translate.py of `src` into `out` with `options`; its wall time and more."""
    flags = ["--beam-size", BEAMS[mode], "--device", "cpu", *options]
    cmd = [sys.executable, "scripts/translate.py", "--checkpoint", ckpt, "--input", src]
    return common.run_measured([*cmd, "--output", out, *flags], out.with_suffix(".log"), env=env)


def offline(ckpt: Path, src: Path, work: Path, mode: str, env: dict, repeats: int) -> dict:
    """translate.py's outputs (the references), and its decoding speed: the median of
    `repeats` fresh processes."""
    out = work / f"translate-{mode}.en"
    wall = translate_py(ckpt, src, out, mode, env, [])
    child = [sys.executable, __file__, "_offline", ckpt, src, work / f"offline-{mode}.en"]
    timings = []
    for _ in range(repeats):
        common.run_measured([*child, BEAMS[mode]], work / "offline.log", stdout=work / "t", env=env)
        timings.append(json.loads((work / "t").read_text().strip().splitlines()[-1]))
    lines, refs = len(common.read_lines(src)), common.read_lines(out)
    decode_s = statistics.median(t["decode_s"] for t in timings)
    client_batches_s = statistics.median(t["client_batches_s"] for t in timings)
    return {
        "mode": mode,
        "references": refs,
        "translate_py_wall_s": round(wall["wall_s"], 2),
        "sent_per_s": round(lines / decode_s, 1),
        "client_batches_sent_per_s": round(lines / client_batches_s, 1),
        "same_as_translate_py": common.read_lines(work / f"offline-{mode}.en") == refs,
    }


def load_table(ckpt: Path, sentences: list[str], refs: dict, work: Path, args, env: dict):
    """Every (batching, mode, clients) run, `--repeats` times (the batched and the unbatched
    server take turns, so that a drifting machine favours neither); and whether each
    server exited 0 every time."""
    runs, exits = [], {}
    servers = [("batched", True, []), ("unbatched", False, [])]
    if args.fast_options:
        servers.append((FAST, True, args.fast_options))
    for repeat, (name, batching, options) in product(range(args.repeats), servers):
        log_file = work / f"serve-{name}.log"
        clients_run = [TARGET_CLIENTS] if options else args.clients
        extra = args.server_options + options
        with running_server(ckpt, log_file, batching, env, extra) as server:
            for mode, clients in product(args.modes, clients_run):
                common.log(f"{name}, {mode}, {clients} client(s): {len(sentences)} requests")
                total, seconds = len(sentences), args.max_seconds
                expected = refs[f"{mode} {FAST}" if options else mode]
                run = load_run(server["port"], sentences, expected, mode, clients, total, seconds)
                runs.append({"server": name, "repeat": repeat, **run})
        exits[name] = exits.get(name, 0) or server["exit_code"]
    return runs, exits


def memory_run(ckpt: Path, sentences: list[str], refs: list, work: Path, args, env) -> dict:
    """A fresh batched server's memory after the first N1 requests and after N2 in all."""
    first, total = args.rss_requests
    found: dict[str, Any] = {"requests": [first, total]}
    log_file = work / "serve-memory.log"
    with running_server(ckpt, log_file, True, env, args.server_options) as server:
        for label, count in (("first", first), ("total", total - first)):
            common.log(f"memory: {count} requests from {TARGET_CLIENTS} clients, greedy")
            port, seconds = server["port"], args.max_seconds * 10
            run = load_run(port, sentences, refs, "greedy", TARGET_CLIENTS, count, seconds)
            found[label] = common.status_mib(server["pid"], ("VmRSS", "VmHWM"))
            found[label] |= {"errors": run["errors"], "identical": run["identical"]}
    # The peak may have been set while loading the model: the current RSS is watched too.
    found["growth_mib"] = round(found["total"]["VmHWM"] - found["first"]["VmHWM"], 1)
    found["rss_growth_mib"] = round(found["total"]["VmRSS"] - found["first"]["VmRSS"], 1)
    return found | {"exit_code": server["exit_code"]}


def verdicts(runs: list[dict], offline_runs: dict, memory: dict) -> dict[str, bool]:
    """The targets at 32 clients, per mode; errors and equality over every run; memory."""
    met = {}
    by = {(r["server"], r["mode"], r["clients"]): r for r in runs}
    for mode, off in offline_runs.items():
        batched = by.get(("batched", mode, 32))
        if batched:
            share = batched["sent_per_s"] / off["client_batches_sent_per_s"]
            name = f"{mode}: batched >= 90% of offline in calls of 32"
            met[name] = share >= TARGETS["vs_client_batches"]
            met[f"{mode}: p99 <= 1 s"] = batched["p99_ms"] <= TARGETS["p99_ms"]
    for mode in offline_runs:
        fast, batched = by.get((FAST, mode, 32)), by.get(("batched", mode, 32))
        if fast and batched:
            ratio = fast["sent_per_s"] / max(batched["sent_per_s"], 1e-9)
            print(
                f"{mode}: the fast options' server at 32 clients: {ratio:.2f}x the batched "
                f"one's sentences/s, {fast['outputs_differing']} output(s) unlike translate.py's"
            )
    met["zero errors"] = all(r["errors"] == 0 and r["not_sent"] == 0 for r in runs)
    plain = [r for r in runs if r["server"] != FAST]  # int8 scales activations per batch
    met["outputs identical to translate.py"] = all(r["identical"] for r in plain)
    if memory:
        growth = max(memory["growth_mib"], memory["rss_growth_mib"])
        met["peak and current RSS growth <= 50 MiB"] = growth <= TARGETS["rss_growth_mib"]
    return met


def report(runs: list[dict], offline_runs: dict, memory: dict, figures: dict) -> None:
    header = ["server", "mode", "clients", "sent/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    keys = ["sent_per_s", "p50_ms", "p95_ms", "p99_ms", "errors", "mean_batch", "identical"]
    rows = [[r["server"], r["mode"], str(r["clients"]), *(str(r[k]) for k in keys)] for r in runs]
    for mode, o in offline_runs.items():
        rows.append(["offline", mode, "-", str(o["sent_per_s"]), *["-"] * 5])
        rows[-1].append(str(o["same_as_translate_py"]))
        rows.append([f"offline, {TARGET_CLIENTS} a call", mode, "-"])
        rows[-1] += [str(o["client_batches_sent_per_s"]), *["-"] * 6]
    common.print_table([*header, "mean batch", "identical"], rows)
    for r in (r for r in runs if "sent_per_s_runs" in r):
        print(f"{r['server']}, {r['mode']}, {r['clients']}: sent/s {r['sent_per_s_runs']}")
    for mode, o in offline_runs.items():
        ceiling = o["client_batches_sent_per_s"] / o["sent_per_s"]
        print(
            f"{mode}: offline in calls of {TARGET_CLIENTS} sentences runs at {ceiling:.0%} of "
            f"offline: the most a server reaches with {TARGET_CLIENTS} one-sentence clients"
        )
    if memory:
        (first, total), peaks = memory["requests"], [memory[k]["VmHWM"] for k in ("first", "total")]
        print(
            f"peak RSS: {peaks[0]:.1f} MiB after {first} requests, {peaks[1]:.1f} MiB after "
            f"{total}: +{memory['growth_mib']} MiB (current RSS +{memory['rss_growth_mib']} MiB)"
        )
    met = verdicts(runs, offline_runs, memory)
    for target, ok in met.items():
        print(f"{target}: {common.verdict(ok)}")
    offline_runs = {
        m: {k: v for k, v in o.items() if k != "references"} for m, o in offline_runs.items()
    }
    figures |= {"runs": runs, "offline": offline_runs, "memory": memory, "targets_met": met}
    common.print_json(figures)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    source = common.MULTI30K / "test_2016_flickr.de.gz"
    p.add_argument("--source", type=Path, default=source, help="sentences to replay")
    p.add_argument("--limit", type=int, help="the first N sentences only")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--rss-requests", type=int, nargs=2, default=[1000, 10000], metavar="N")
    p.add_argument("--max-seconds", type=float, default=600, help="per load run (default 600)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each; medians shown")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server and translate.py")
    p.add_argument("--server-options", default="", help='e.g. "--batch-window-ms 10"')
    p.add_argument(
        "--fast-options", default="", help='a third server: e.g. "--quantize int8 --shortlist F"'
    )
    p.add_argument("--work-dir", type=Path, default=common.REPO / ".cache/bench/serve_load")
    p.add_argument("--quick", action="store_true", help="40 sentences, 1 and 8 clients, less RSS")
    args = p.parse_args()
    args.server_options, args.fast_options = args.server_options.split(), args.fast_options.split()
    if args.quick:
        args.limit, args.clients, args.rss_requests = 40, [1, 8], [100, 400]
    return args


def main() -> None:
    args = parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint.resolve()
    sentences = common.read_lines(args.source, args.limit)
    src = work / "source.txt"
    common.write_lines(src, sentences)
    env = common.child_env(args.threads)
    offline_runs = {}
    for mode in args.modes:
        common.log(f"translate.py offline, {mode}: {len(sentences)} sentences")
        offline_runs[mode] = offline(ckpt, src, work, mode, env, args.repeats)
    refs = {mode: o["references"] for mode, o in offline_runs.items()}
    for mode in args.modes if args.fast_options else []:
        out = work / f"translate-{mode}-fast.en"
        translate_py(ckpt, src, out, mode, env, args.fast_options)
        refs[f"{mode} {FAST}"] = common.read_lines(out)
    runs, exits = load_table(ckpt, sentences, refs, work, args, env)
    runs = medians(runs) if args.repeats > 1 else runs
    memory = {}
    if "greedy" in refs:
        memory = memory_run(ckpt, sentences, refs["greedy"], work, args, env)
    figures = {"code": common.git_state(), "checkpoint": str(ckpt), "sentences": len(sentences)}
    figures |= {"server_exit_codes": exits, "threads": args.threads, "cpus": os.cpu_count()}
    report(runs, offline_runs, memory, figures | {"server_options": args.server_options})


if __name__ == "__main__":
    if sys.argv[1:2] == ["_offline"]:
        offline_child(*sys.argv[2:6])
    else:
        main()
