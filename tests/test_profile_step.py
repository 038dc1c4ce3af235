"""benchmarks/profile_step.py: every phase of a training step is timed, in order, and the
phases add up to the step."""

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_every_phase_of_a_step_is_timed_in_order(
    load_benchmark: Callable[[str], ModuleType], tiny_corpus: Path, tmp_path: Path
) -> None:
    profile_step = load_benchmark("profile_step")
    overrides = [
        *("--data.train", str(tiny_corpus / "train"), "--data.val", str(tiny_corpus / "val")),
        *("--data.cache_dir", str(tmp_path / "cache"), "--data.max_tokens", "400"),
        *("--data.vocab_size", "60", "--model.embed_dim", "16", "--model.hidden_size", "16"),
    ]
    cli = profile_step.short_run(str(DEMO), str(tmp_path / "run"), 4, overrides)
    clock = profile_step.PhaseClock(cli.model.model)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    seconds = clock.phase_seconds(range(1, 3))
    assert set(seconds) == {name for _, name in profile_step.PHASES} | {profile_step.DATA}
    assert all(len(values) == 2 and min(values) >= 0 for values in seconds.values()), seconds
    for i, step in enumerate((1, 2)):
        total = sum(values[i] for values in seconds.values())
        elapsed = clock.marks[step + 1]["start"] - clock.marks[step]["start"]
        assert total == pytest.approx(elapsed, rel=1e-9)
