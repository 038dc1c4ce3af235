"""The server's graceful stop (seq2seq/server/run.py), in-process: draining after a signal,
its time limit, a second SIGINT, and the guard of the one uvicorn method overridden.
The whole stop in a real process under load: test_server.py's SIGTERM test."""

import asyncio
import inspect
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

uvicorn = pytest.importorskip("uvicorn", reason="the server needs the extra `serve`")
from seq2seq.server.app import Gate  # noqa: E402
from seq2seq.server.run import LINGER_S, GracefulServer  # noqa: E402


async def app(scope: dict, receive: Callable, send: Callable) -> None:
    """An ASGI app that answers 204 to everything."""
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def graceful_server(drain_s: float = 30.0) -> tuple[GracefulServer, Gate]:
    gate = Gate()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    return GracefulServer(config, gate, drain_s=drain_s), gate


def test_a_signal_drains_the_requests_in_flight_then_stops(serving: Any) -> None:
    server, gate = graceful_server()
    thread, _ = serving(server)
    gate.in_flight = 1
    server.handle_exit(signal.SIGTERM, None)
    assert gate.draining and not server.should_exit
    time.sleep(LINGER_S + 0.3)
    assert thread.is_alive(), "stopped with a request in flight"
    gate.in_flight = 0
    thread.join(timeout=5)
    assert not thread.is_alive() and not server.force_exit


def test_draining_ends_after_drain_s(serving: Any) -> None:
    server, gate = graceful_server(drain_s=0.6)
    thread, _ = serving(server)
    gate.in_flight = 1  # a client that never sends the rest of its body
    started = time.monotonic()
    server.handle_exit(signal.SIGTERM, None)
    thread.join(timeout=10)
    assert not thread.is_alive() and 0.6 < time.monotonic() - started < 5


def test_a_second_sigint_stops_at_once() -> None:
    server, gate = graceful_server()
    server.handle_exit(signal.SIGINT, None)
    assert gate.draining and not server.should_exit
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit and server.force_exit


def test_uvicorn_still_installs_handle_exit_for_sigint_and_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard of the one uvicorn method overridden (uvicorn has no public setting for
    its signal handling). Where it fails, uvicorn changed how `serve` handles signals: fix
    GracefulServer before widening pyproject.toml's range for uvicorn."""
    assert list(inspect.signature(uvicorn.Server.handle_exit).parameters) == [
        "self",
        "sig",
        "frame",
    ]
    installed: list[tuple[int, object]] = []

    def record(sig: int, handler: object) -> object:  # installs nothing
        installed.append((sig, handler))
        return signal.getsignal(sig)

    monkeypatch.setattr(signal, "signal", record)
    server, _ = graceful_server()
    server.should_exit = True  # stop as soon as started
    asyncio.run(server.serve())
    assert threading.current_thread() is threading.main_thread()  # where uvicorn installs them
    for sig in (signal.SIGINT, signal.SIGTERM):
        assert (sig, server.handle_exit) in installed, f"uvicorn no longer installs {sig!r}"
