"""Cross-request batching: one worker thread owns the model, the event loop only waits.

A request's sentences go on a queue as one job. The worker takes the oldest job, adds
the jobs already waiting and, while more are expected, each job that arrives within
`window_s` of the one before, until `max_tokens`; it decodes them with one call per set
of decoding options and hands each request its own slice of the results through its
event loop; if a call fails, it decodes each of its requests alone, so that a bad
sentence fails its own request only. More are expected while the batch holds fewer jobs
than were pending at once (submitted, not yet answered) during the last batch: clients
that the last batch answered and that come back join the next one, and a lone client,
one request at a time, never waits.
"""

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Decode = Callable[[list[str], Any], list[Any]]  # (sentences, options) -> one result each


class QueueFull(Exception):
    """Taking the request would put more sentences in the queue than it holds."""


@dataclass(eq=False)
class Job:
    """One request's sentences, waiting for the worker."""

    sentences: list[str]
    options: Hashable  # requests with equal options are decoded in one call
    tokens: int  # its share of a batch's token budget
    deadline: float  # after this nobody waits for the results: the worker skips the job
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Batcher:
    """Decodes queued jobs in batches on one worker thread.

    Args:
        decode: runs the model; called on the worker thread only.
        window_s: how long the worker waits for the next job to join a batch, while more
            are expected.
        max_tokens: a batch stops gathering jobs once their tokens reach this.
        max_queue: sentences that may wait; beyond that `submit` raises QueueFull.
        batching: False decodes one job at a time, in order of arrival.
        setup: runs first on the worker thread (e.g. to set its thread-local settings).
    """

    def __init__(
        self,
        decode: Decode,
        *,
        window_s: float,
        max_tokens: int,
        max_queue: int,
        batching: bool = True,
        setup: Callable[[], None] = lambda: None,
    ) -> None:
        self.decode, self.setup = decode, setup
        self.window_s, self.max_tokens, self.max_queue = window_s, max_tokens, max_queue
        self.batching = batching
        self.batches = 0  # decode calls so far
        self.decoded = 0  # sentences decoded so far
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._waiting = 0  # sentences in the queue
        self._pending = 0  # jobs submitted and not yet settled
        self._peak = 0  # most jobs pending at once since the worker took the last batch
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="seq2seq-decoder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Decode what is queued, then end the worker."""
        self._queue.put(None)
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        """Sentences queued and not yet taken by the worker."""
        return self._waiting

    async def submit(
        self, sentences: list[str], options: Hashable, *, tokens: int, timeout: float
    ) -> list[Any]:
        """The results for `sentences`, in order; QueueFull, or asyncio.TimeoutError
        after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        job = Job(sentences, options, tokens, deadline, loop.create_future(), loop)
        with self._lock:
            if self._waiting + len(sentences) > self.max_queue:
                raise QueueFull
            self._waiting += len(sentences)
            self._pending += 1
            self._peak = max(self._peak, self._pending)
        self._queue.put(job)
        return await asyncio.wait_for(job.future, timeout)

    def _run(self) -> None:
        self.setup()
        while (first := self._take(None)) is not None:
            for group in _by_options(self._gather(first)):
                self._decode_group(group)

    def _take(self, timeout: float | None) -> Job | None:
        """The next job (None: stop); waits at most `timeout` seconds (queue.Empty)."""
        job = self._queue.get(timeout=timeout)
        if job is not None:
            with self._lock:
                self._waiting -= len(job.sentences)
        return job

    def _gather(self, first: Job) -> list[Job]:
        """`first`, the jobs waiting, and, while fewer jobs than the last batch's peak of
        pending ones are in, each that joins within the window of the one before; up to
        the token budget."""
        with self._lock:
            expected, self._peak = self._peak, self._pending
        jobs, tokens = [first], first.tokens
        while self.batching and tokens < self.max_tokens:
            try:
                job = self._take(self.window_s if len(jobs) < expected else 0.0)
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(job)
            tokens += job.tokens
        return jobs

    def _decode_group(self, jobs: list[Job]) -> None:
        """One decode call for jobs with the same options; each gets its slice. If the
        call fails, each job is decoded alone: a failing sentence fails its own job only."""
        now = time.monotonic()
        live = [job for job in jobs if job.deadline > now]
        self._settled(len(jobs) - len(live))  # the expired ones
        jobs = live
        if not jobs:
            return
        sentences = [sentence for job in jobs for sentence in job.sentences]
        try:
            results = self.decode(sentences, jobs[0].options)
        except Exception as err:
            if len(jobs) > 1:
                log.warning("decoding %d jobs together failed (%s); each alone", len(jobs), err)
                for job in jobs:
                    self._decode_group([job])
                return
            log.exception("decoding %d sentence(s) failed", len(sentences))
            self._settled(1)
            _settle(jobs[0], None, err)
            return
        self.batches, self.decoded = self.batches + 1, self.decoded + len(sentences)
        self._settled(len(jobs))
        start = 0
        for job in jobs:
            _settle(job, results[start : start + len(job.sentences)], None)
            start += len(job.sentences)

    def _settled(self, jobs: int) -> None:
        """`jobs` are no longer pending: answered, failed or expired."""
        with self._lock:
            self._pending -= jobs


def _by_options(jobs: list[Job]) -> list[list[Job]]:
    """Jobs grouped by equal options, groups in order of their first job."""
    groups: dict[Hashable, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.options, []).append(job)
    return list(groups.values())


def _settle(job: Job, results: list[Any] | None, error: Exception | None) -> None:
    """Resolve the job's future on its event loop (from the worker thread)."""
    with contextlib.suppress(RuntimeError):  # raised once the loop has closed: nobody waits
        job.loop.call_soon_threadsafe(_resolve, job.future, results, error)


def _resolve(future: asyncio.Future, results: list[Any] | None, error: Exception | None) -> None:
    if future.done():  # timed out meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(results)
