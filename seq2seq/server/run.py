"""Running the server: settings from the command line, the model, uvicorn, a graceful stop."""

import argparse
import asyncio
import logging
import math
import signal
import socket
import time
from types import FrameType

import torch
import uvicorn
from pydantic import ValidationError

from seq2seq.checkpoint import load_checkpoint
from seq2seq.errors import UserError
from seq2seq.server.app import Gate, create_app
from seq2seq.server.info import describe_loaded
from seq2seq.server.schemas import Settings
from seq2seq.translator import Translator

log = logging.getLogger(__name__)

# After SIGTERM, the listening socket stays open this long at least, answering 503, so
# that clients and load balancers learn that the server stops instead of meeting a
# closed port (or a connection reset, for one that the kernel had queued).
LINGER_S = 0.5

FLAGS = {  # Settings field: its command-line option
    "max_sentences": "--max-sentences",
    "max_chars": "--max-chars",
    "max_body_bytes": "--max-body-bytes",
    "max_queue": "--max-queue",
    "timeout_s": "--timeout",
    "batching": "--no-batching",
    "batch_window_ms": "--batch-window-ms",
    "batch_tokens": "--batch-tokens",
    "quantize": "--quantize",
    "shortlist": "--shortlist",
}


def run_server(args: argparse.Namespace) -> None:
    """Load the model of `args.checkpoint`, then serve it until SIGTERM or SIGINT."""
    settings = settings_from(args)
    loaded = [(load_checkpoint(path, mmap=True), path) for path in args.checkpoint]  # once
    info = describe_loaded(loaded, settings, args.name)  # runs no parallel operation
    threads = threads_for_worker()
    speed = {"quantize": settings.quantize, "shortlist": settings.shortlist}
    translator = Translator.from_all_loaded(loaded, args.device, **speed)  # a model or ensemble
    app = create_app(translator, info, threads)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=int(settings.timeout_s) + 1,
    )
    log.info("serving %s on http://%s:%d (API docs: /docs)", info.name, args.host, args.port)
    GracefulServer(config, app.state.service.gate, drain_s=settings.timeout_s).run()


def settings_from(args: argparse.Namespace) -> Settings:
    """The server settings of `args`; UserError naming the option for a bad value."""
    values = {name: getattr(args, name) for name in FLAGS if name not in ("batching", "timeout_s")}
    values |= {"batching": not args.no_batching, "timeout_s": args.timeout}
    try:
        settings = Settings(**values)
    except ValidationError as err:
        problem = err.errors(include_url=False)[0]
        name = str(problem["loc"][0])
        raise UserError(f"{FLAGS[name]}: {problem['msg'].lower()}, got {values[name]}") from None
    if settings.max_queue < settings.max_sentences:
        raise UserError("--max-queue must be at least --max-sentences (a request must fit)")
    return settings


def threads_for_worker() -> int:
    """Run the main thread's torch operations on one thread from now on, before any has
    run on more: -> the intra-op threads torch would have used, for the decoding worker.

    With two OpenMP thread teams (the main thread's, idle while the event loop runs, and
    the worker's), libgomp manages more threads than there are CPUs on a machine whose
    cores the worker's team fills; it then spins only briefly before sleeping, and every
    parallel operation of the worker pays a wake-up (benchmarks/README.md: the server's
    OpenMP teams).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


class GracefulServer(uvicorn.Server):
    """uvicorn stopping in two steps on SIGTERM or SIGINT: new translation requests get 503
    until those in flight are answered (and `LINGER_S` has passed), or for `drain_s` at
    most; then the server stops and the process exits 0. A second SIGINT stops at once.

    uvicorn has no public setting for what a signal does: its `serve` installs the server's
    `handle_exit` for SIGINT and SIGTERM, which this class overrides (pyproject.toml pins
    uvicorn to the versions tested; tests/test_server_run.py checks that uvicorn still
    installs it). uvicorn's own records the signal and raises it again once stopped, which
    would end the process with the signal's status instead of 0.
    """

    def __init__(self, config: uvicorn.Config, gate: Gate, drain_s: float) -> None:
        super().__init__(config)
        self.gate, self.drain_s = gate, drain_s
        self.drain_started = math.inf  # time.monotonic() of the signal

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's `serve`, with a task that stops it once draining is over."""
        watcher = asyncio.create_task(self._stop_when_drained())
        try:
            await super().serve(sockets)
        finally:
            watcher.cancel()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The signal handler: start draining (a second SIGINT: stop now)."""
        if self.gate.draining and sig == signal.SIGINT:
            self.should_exit = self.force_exit = True
        if not self.gate.draining:
            self.gate.draining, self.drain_started = True, time.monotonic()
        log.info("stopping: %d request(s) in flight, new ones get 503", self.gate.in_flight)

    async def _stop_when_drained(self) -> None:
        """Every 0.1 s: whether draining is over. (After `drain_s` at most: a client that
        never sends its whole body must not hold the server.)"""
        while not self.should_exit:
            await asyncio.sleep(0.1)
            draining_s = time.monotonic() - self.drain_started
            if (self.gate.in_flight == 0 and draining_s >= LINGER_S) or draining_s > self.drain_s:
                self.should_exit = True
