"""docs/experiments/long_range.py: its tasks, and a tiny grid end to end."""

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "long_range.py"


@pytest.fixture(scope="module")
def long_range() -> ModuleType:
    """The experiment as a module (docs/experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location("long_range", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("task", "source", "target"),
    [("copy", "3a1b0", "3a1b0"), ("reverse", "3a1b0", "0b1a3"), ("sort", "j3a1b0a", "013aabj")],
)
def test_tasks(long_range: ModuleType, task: str, source: str, target: str) -> None:
    src = torch.tensor([long_range.from_text(source)])
    assert long_range.to_text(long_range.TASKS[task](src)[0].tolist()) == target


def test_pairs_are_seeded_and_in_the_vocabulary(long_range: ModuleType) -> None:
    def sources(seed: int, stream: int) -> torch.Tensor:
        src, tgt = long_range.make_pairs("sort", 7, 50, long_range.seeded(seed, stream))
        assert src.shape == tgt.shape == (50, 7)
        return src

    src = sources(1, 0)
    assert torch.equal(src, sources(1, 0))
    assert not torch.equal(src, sources(2, 0)) and not torch.equal(src, sources(1, 1))
    assert int(src.min()) >= long_range.FIRST and int(src.max()) < long_range.VOCAB


def test_accuracy(long_range: ModuleType) -> None:
    scores = long_range.accuracy([[4, 5, 6], [4, 5], [7]], [[4, 5, 6], [4, 6, 6], [7]])
    assert scores == {"exact_match": 2 / 3, "token_accuracy": (3 + 1 + 1) / (3 + 3 + 1)}


def test_tiny_grid(long_range: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--tasks", "reverse", "--lengths", "3", "5", "--cells", "lstm"]
    argv += ["--attentions", "none", "luong", "--seeds", "1", "2", "--steps", "2"]
    argv += ["--test-size", "6", "--batch-size", "4", "--output-dir", str(tmp_path)]
    long_range.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["task", "length", "cell", "attention"]
    assert len(lines) == 1 + 4 + 2  # header, 2 lengths x 2 attentions, summary, JSON
    summary = json.loads(lines[-1])
    assert summary["settings"]["steps"] == 2 and summary["settings"]["seeds"] == [1, 2]
    assert len(summary["results"]) == 4
    for result in summary["results"]:
        assert 0 <= result["exact_match"] <= 1 and 0 <= result["token_accuracy"] <= 1
        assert result["exact_match_sd"] is not None
        assert [r["steps"] for r in result["per_seed"]] == [2, 2]
        assert len(result["grad_by_distance"]) == result["length"]
    assert (tmp_path / "gradient_flow.png").stat().st_size > 0


TINY = ["--tasks", "reverse", "--lengths", "3", "5", "--cells", "gru", "--attentions", "none"]
TINY += ["luong", "--steps", "3", "--test-size", "6", "--batch-size", "4", "--threads", "1"]


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """Restores torch's thread count, which main() sets for one job."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _results(out: str) -> list[dict]:
    """The figures of each model in main()'s JSON line, without the timings."""
    results = json.loads(out.strip().splitlines()[-1])["results"]
    for result in results:
        for figures in [result, *result["per_seed"]]:
            for timing in ["train_s", "others_cpu_s"]:
                figures.pop(timing, None)
    return results


@pytest.mark.usefixtures("torch_threads")
def test_finished_models_are_reused(
    long_range: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    argv = [*TINY, "--output-dir", str(tmp_path)]
    long_range.main(argv)
    first = _results(capsys.readouterr().out)
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4

    def no_training(*args: object) -> None:
        raise AssertionError("a kept model was trained again")

    monkeypatch.setattr(long_range, "measure", no_training)
    long_range.main(argv)
    assert _results(capsys.readouterr().out) == first
    with pytest.raises(AssertionError, match="trained again"):  # other settings: measured anew
        long_range.main([*argv, "--steps", "4"])


@pytest.mark.usefixtures("torch_threads")
def test_jobs_give_the_figures_of_one_process(
    long_range: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    long_range.main([*TINY, "--output-dir", str(tmp_path / "one")])
    script = Path(long_range.__file__)
    argv = [*TINY, "--jobs", "2", "--output-dir", str(tmp_path / "two")]
    two = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, check=True
    )
    assert _results(two.stdout) == _results(capsys.readouterr().out)


@pytest.mark.slow
def test_quick_grid(long_range: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    long_range.main(["--quick", "--output-dir", str(tmp_path)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(summary["results"]) == 2 * 3 * 3  # lengths x cells x attentions
