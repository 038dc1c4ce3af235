"""The translation server under load: throughput, latency, errors, equal outputs, memory.

    python benchmarks/serve_load.py --checkpoint runs/multi30k_gru_bahdanau/checkpoints/best.ckpt
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
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import MULTI30K, REPO, git_state, log, print_table, read_lines, write_lines

SERVE = REPO / "scripts" / "serve.py"
TRANSLATE = REPO / "scripts" / "translate.py"
MODES = {"greedy": {"greedy": True}, "beam": {"beam_size": 5}}
BEAMS = {"greedy": 1, "beam": 5}
TARGETS = {"vs_unbatched": 5.0, "vs_offline": 0.6, "p99_ms": 1000.0, "rss_growth_mib": 50.0}
TARGET_CLIENTS = 32


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(
    ckpt: Path, log_file: Path, batching: bool, env: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """scripts/serve.py on a free loopback port until the block ends, then SIGTERM;
    yields {"port", "pid"}, to which "exit_code" is added once it has stopped."""
    port = free_port()
    cmd = [sys.executable, SERVE, "--checkpoint", ckpt, "--port", port, "--device", "cpu"]
    cmd += ["--log-level", "warning", "--max-queue", "4096", "--timeout", "60"]
    cmd += [] if batching else ["--no-batching"]
    with open(log_file, "wb") as stderr:
        process = subprocess.Popen([str(a) for a in cmd], stderr=stderr, env=env, cwd=REPO)
    server = {"port": port, "pid": process.pid}
    try:
        wait_healthy(port, process, log_file)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            server["exit_code"] = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            server["exit_code"] = "killed"


def wait_healthy(port: int, process: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_file.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not become healthy within 300 s")


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        return json.load(response)


def memory_mib(pid: int) -> dict[str, float]:
    """The process's current (VmRSS) and peak (VmHWM) resident memory."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


# -- the clients -----------------------------------------------------------------------------


class Client:
    """One keep-alive connection; reconnects after a failure."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def translate(self, sentence: str, options: dict[str, Any]) -> tuple[int, str]:
        """(status, translation) or (status, error message); status 0: no answer."""
        body = json.dumps({"text": sentence, **options})
        try:
            self.connection.request(
                "POST", "/v1/translate", body, {"Content-Type": "application/json"}
            )
            response = self.connection.getresponse()
            answer = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError) as err:
            self.connection.close()
            return 0, repr(err)
        if response.status != 200:
            return response.status, answer.get("error", "")
        return 200, answer["translations"][0]["text"]


def replay(
    port: int, sentences: list[str], options: dict, clients: int, total: int, seconds: float
) -> list[tuple[float, int, str] | None]:
    """`total` requests, sentence i % len(sentences) each, from `clients` threads; per
    request (latency s, status, text), None for those not sent within `seconds`."""
    results: list[tuple[float, int, str] | None] = [None] * total
    order, lock = iter(range(total)), threading.Lock()
    stop_at = time.monotonic() + seconds

    def work() -> None:
        client = Client(port)
        while time.monotonic() < stop_at:
            with lock:
                i = next(order, None)
            if i is None:
                return
            start = time.perf_counter()
            status, text = client.translate(sentences[i % len(sentences)], options)
            results[i] = (time.perf_counter() - start, status, text)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def summarize(
    results: list[tuple[float, int, str] | None], wall: float, references: list[str]
) -> dict[str, Any]:
    sent = [r for r in results if r is not None]
    ok = [(i, r) for i, r in enumerate(results) if r is not None and r[1] == 200]
    latencies = [r[0] * 1000 for _, r in ok]
    differ = sum(r[2] != references[i % len(references)] for i, r in ok)
    return {
        "requests": len(sent),
        "not_sent": len(results) - len(sent),
        "sent_per_s": round(len(ok) / wall, 1),
        **{f"p{q}_ms": round(percentile(latencies, q), 1) for q in (50, 95, 99)},
        "errors": len(sent) - len(ok),
        "error_examples": sorted({f"{r[1]}: {r[2]}" for r in sent if r[1] != 200})[:3],
        "outputs_differing": differ,
        "identical": differ == 0 and len(ok) == len(results),
    }


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
    """In a fresh process: decode as translate.py does, timing the decoding alone."""
    from seq2seq.translator import Translator

    translator = Translator.from_checkpoint(ckpt, device="cpu")
    sentences = read_lines(Path(src))
    start = time.perf_counter()
    outputs = translator.translate(sentences, beam_size=int(beam))
    seconds = time.perf_counter() - start
    write_lines(Path(hyp), outputs)
    print(json.dumps({"decode_s": seconds}))


def offline(ckpt: Path, src: Path, work: Path, mode: str, env: dict) -> dict[str, Any]:
    """translate.py's outputs (the references), and its decoding speed."""
    out = work / f"translate-{mode}.en"
    flags = ["--greedy"] if mode == "greedy" else ["--beam-size", str(BEAMS[mode])]
    cmd = [sys.executable, TRANSLATE, "--checkpoint", ckpt, "--input", src, "--output", out]
    start = time.perf_counter()
    with open(work / f"translate-{mode}.log", "wb") as stderr:
        command = [str(a) for a in [*cmd, *flags, "--device", "cpu"]]
        subprocess.run(command, check=True, env=env, stderr=stderr)
    wall = time.perf_counter() - start
    timed = work / f"offline-{mode}.en"
    child = [sys.executable, __file__, "_offline", ckpt, src, timed, BEAMS[mode]]
    done = subprocess.run([str(a) for a in child], check=True, env=env, capture_output=True)
    decode_s = json.loads(done.stdout.decode().strip().splitlines()[-1])["decode_s"]
    references, lines = read_lines(out), len(read_lines(src))
    return {
        "mode": mode,
        "references": references,
        "translate_py_wall_s": round(wall, 2),
        "decode_s": round(decode_s, 2),
        "sent_per_s": round(lines / decode_s, 1),
        "same_as_translate_py": read_lines(timed) == references,
    }


# -- the benchmark ---------------------------------------------------------------------------


def load_table(
    ckpt: Path, sentences: list[str], refs: dict, work: Path, args, env: dict
) -> tuple[list[dict], dict]:
    """Every (batching, mode, clients) run, and whether each server exited 0."""
    runs, exits = [], {}
    for batching in (True, False):
        name = "batched" if batching else "unbatched"
        with running_server(ckpt, work / f"serve-{name}.log", batching, env) as server:
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
                    runs.append({"server": name, **run})
        exits[name] = server["exit_code"]
    return runs, exits


def memory_run(ckpt: Path, sentences: list[str], refs: dict, work: Path, args, env) -> dict:
    """A fresh batched server's memory after the first N1 requests and after N2 in all."""
    first, total = args.rss_requests
    found: dict[str, Any] = {"requests": [first, total]}
    with running_server(ckpt, work / "serve-memory.log", True, env) as server:
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
    print_table(header, rows)
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
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server and translate.py")
    p.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "serve_load")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 40 sentences, 1 and 8 clients, memory at 100 and 400",
    )
    args = p.parse_args()
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
        offline_runs[mode] = offline(ckpt, src, work, mode, env)
    refs = {mode: o["references"] for mode, o in offline_runs.items()}
    runs, exits = load_table(ckpt, sentences, refs, work, args, env)
    memory = memory_run(ckpt, sentences, refs, work, args, env) if "greedy" in refs else {}
    extra = {"code": code, "checkpoint": str(ckpt), "sentences": len(sentences)}
    extra |= {"server_exit_codes": exits, "threads": args.threads, "cpus": os.cpu_count()}
    report(runs, offline_runs, memory, extra)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_offline"]:
        offline_child(*sys.argv[2:6])
    else:
        main()
