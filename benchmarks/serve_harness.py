"""benchmarks/serve_load.py's harness: scripts/serve.py in a child process on a loopback
port, and keep-alive clients in threads that replay sentences and time each answer."""

import http.client
import json
import math
import signal
import socket
import statistics
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
from benchmarks import common

Result = tuple[float, int, str] | None  # (latency s, HTTP status, text); None: not sent


@contextmanager
def running_server(
    ckpt: Path, log_file: Path, batching: bool, env: dict[str, str], extra: list[str]
) -> Iterator[dict[str, Any]]:
    """scripts/serve.py (with the `extra` options) on a free loopback port until the block
    ends, then SIGTERM; yields {"port", "pid"}, to which "exit_code" is added once it has
    stopped."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "scripts/serve.py", "--checkpoint", ckpt, "--port", port]
    cmd += ["--device", "cpu", "--log-level", "warning", "--max-queue", "4096", "--timeout", "60"]
    cmd += ([] if batching else ["--no-batching"]) + extra
    with open(log_file, "wb") as stderr:
        process = subprocess.Popen([str(a) for a in cmd], stderr=stderr, env=env, cwd=common.REPO)
    server = {"port": port, "pid": process.pid}
    try:
        deadline = time.monotonic() + 300
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            server["exit_code"] = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            server["exit_code"] = "killed"


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def health(port: int) -> dict[str, Any]:
    """The server's /health: its counts of decoded sentences and batches among them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        return json.load(response)


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
) -> list[Result]:
    """`total` requests, sentence i % len(sentences) each, from `clients` threads; per
    request its `Result`, None for those not sent within `seconds`."""
    results: list[Result] = [None] * total
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


def summarize(results: list[Result], wall: float, references: list[str]) -> dict[str, Any]:
    """Requests sent and not, sentences/s, latency percentiles, errors (with examples),
    and whether every output equals its reference."""
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


def medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per (server, mode, clients) from its repeats: the median of each timing and
    of the mean batch, counts summed, identical only if every repeat was, and the repeats'
    sentences/s listed (`sent_per_s_runs`)."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["server"], run["mode"], run["clients"]), []).append(run)
    merged = []
    for (server, mode, clients), repeats in cells.items():
        timed = ["wall_s", "sent_per_s", "p50_ms", "p95_ms", "p99_ms", "mean_batch"]
        cell = {key: round(statistics.median(r[key] for r in repeats), 2) for key in timed}
        counts = ["requests", "not_sent", "errors", "outputs_differing"]
        cell |= {key: sum(r[key] for r in repeats) for key in counts}
        cell |= {
            "identical": all(r["identical"] for r in repeats),
            "error_examples": sorted({e for r in repeats for e in r["error_examples"]})[:3],
            "sent_per_s_runs": [r["sent_per_s"] for r in repeats],
        }
        merged.append({"server": server, "mode": mode, "clients": clients, **cell})
    return merged
