"""Shared fixtures: a tiny parallel corpus made in tmp_path, and fixed seeds."""

from pathlib import Path

import pytest
import torch

from seq2seq.demo import write_demo_corpus

MULTI30K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "multi30k"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


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
