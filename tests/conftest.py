"""Shared fixtures: a tiny parallel corpus, a tiny trained model, fixed seeds, a live server,
the benchmark scripts as modules, a count of checkpoint reads."""

import importlib.util
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from seq2seq.cli.train import fit_and_test
from seq2seq.demo import write_demo_corpus

MULTI30K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "multi30k"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _denormals_kept() -> Iterator[None]:
    """Each test starts computing with denormals, as a process does (training flushes them)."""
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small German->English number-words corpus: `train|val|test.{de,en}` in one folder."""
    out = tmp_path_factory.mktemp("tiny_corpus")
    return write_demo_corpus(out, seed=7, sizes={"train": 300, "val": 30, "test": 30})


@pytest.fixture
def multi30k() -> Path:
    """The real Multi30k folder; skips the test where `../shared` is absent."""
    if not (MULTI30K / "train.de.gz").exists():
        pytest.skip("../shared/data/multi30k is absent")
    return MULTI30K.resolve()


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """benchmarks/<name>.py as a module (benchmarks/ is not a package on pytest's path)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def _tiny_run_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    """scripts/train.py arguments for a tiny model on `corpus`, writing everything under `out`."""
    return [
        *("--data.train", str(corpus / "train"), "--data.val", str(corpus / "val")),
        *("--data.test", str(corpus / "test"), "--data.cache_dir", str(out / "cache")),
        *("--data.max_tokens", "400", "--data.vocab_size", "60"),
        *("--model.embed_dim", "16", "--model.hidden_size", "16"),
        *("--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false"),
        *extra,
    ]


@pytest.fixture(scope="session")
def train_args(tiny_corpus: Path) -> Callable[..., list[str]]:
    """`train_args(out, *extra)`: arguments of a tiny training run on `tiny_corpus`."""
    return partial(_tiny_run_args, tiny_corpus)


@pytest.fixture(scope="session")
def trained(train_args: Callable[..., list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short training run (2 epochs of 3 batches); returns its output folder."""
    out = tmp_path_factory.mktemp("run")
    fit_and_test(
        train_args(
            out,
            *("--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3"),
            *("--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "1"),
            *("--model.test_beam_size", "2"),
        )
    )
    return out


@pytest.fixture
def serving() -> Iterator[Callable[[Any], tuple[threading.Thread, str]]]:
    """`serving(server)`: runs a uvicorn Server on a free loopback port in a thread (where
    uvicorn installs no signal handler), until the test ends; -> the thread, the base URL."""
    running = []

    def start(server: Any) -> tuple[threading.Thread, str]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "the test server did not start"
        return thread, f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def live_server(serving: Callable[[Any], tuple[threading.Thread, str]]) -> Callable[[Any], str]:
    """`live_server(app)`: serves an ASGI app with uvicorn (see `serving`); -> its base URL."""
    import uvicorn

    return lambda app: serving(uvicorn.Server(uvicorn.Config(app, log_level="warning")))[1]


@pytest.fixture
def torch_loads(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, bool]]:
    """Counts the test's torch.load calls (Lightning's included) by (file, mapped)."""
    loads: Counter[tuple[str, bool]] = Counter()
    load = torch.load

    def counting(source: Any, *args: Any, **kwargs: Any) -> Any:
        path = source if isinstance(source, str | Path) else source.name  # Lightning's: a file
        loads[str(path), bool(kwargs.get("mmap"))] += 1
        return load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return loads
