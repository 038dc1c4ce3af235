"""benchmarks/common.py, the benchmarks' harness: child processes run side by side, each
on its core, a failure stopping the others; runs kept under the settings they depend on."""

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture
def common(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("common")


def test_side_by_side_jobs_run_at_once_each_on_its_core(common: ModuleType, tmp_path) -> None:
    """Each job waits for the other's file, so they finish only if they run together."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        pytest.skip("needs two CPU cores")
    wait_for = (
        "import os, sys, time; from pathlib import Path; "
        "Path(sys.argv[1]).touch(); deadline = time.time() + 30\n"
        "while not Path(sys.argv[2]).exists() and time.time() < deadline: time.sleep(0.01)\n"
        "assert Path(sys.argv[2]).exists(); print(sorted(os.sched_getaffinity(0)))"
    )
    a, b = tmp_path / "a", tmp_path / "b"
    jobs = [
        common.Job(
            [sys.executable, "-c", wait_for, mine, theirs],
            tmp_path / f"{mine.name}.log",
            stdout=tmp_path / f"{mine.name}.out",
            cores={core},
        )
        for core, (mine, theirs) in zip(cores, [(a, b), (b, a)], strict=True)
    ]

    measured = common.run_together(jobs)

    assert [(tmp_path / f"{x}.out").read_text().strip() for x in "ab"] == [
        str([core]) for core in cores
    ]
    assert all(m["wall_s"] < 30 and m["peak_rss_mib"] > 1 for m in measured)


def test_a_failed_job_stops_the_others_and_raises_with_its_log(common, tmp_path) -> None:
    failing = [sys.executable, "-c", "import sys; sys.exit('no such corpus: x.de')"]
    sleeping = [sys.executable, "-c", "import time; time.sleep(120)"]
    jobs = [common.Job(sleeping, tmp_path / "sleep.log"), common.Job(failing, tmp_path / "x.log")]
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="no such corpus"):
        common.run_together(jobs)
    assert time.monotonic() - start < 60  # the sleeper was stopped, not waited for


def test_a_run_is_kept_only_under_the_same_settings(common: ModuleType, tmp_path: Path) -> None:
    run, key = tmp_path / "run", {"minutes": 30.0, "config": tmp_path / "a.yaml"}
    run.mkdir()
    made = common.kept_or_made(run, key, lambda: {"updates": 7, "code": "abc"})

    assert made["updates"] == 7
    assert common.kept(run, key) == made
    assert common.kept(run, key | {"minutes": 10.0}) is None
    assert common.kept(run, key, retrain=True) is None
    assert common.kept_or_made(run, key, lambda: {"updates": 8}) == made  # not made again
