"""benchmarks/beyond_one_report.py: each kind's mean, paired gains, each ensemble's verdict;
and the side-by-side runs' child processes (benchmarks/common.run_together)."""

import os
import sys
import time

import pytest


def _decoding(kind: str, seed: int | None, bleu: float, decode_s: float) -> dict:
    return {"kind": kind, "seed": seed, "bleu": bleu, "chrf": bleu + 20.0, "decode_s": decode_s}


@pytest.fixture
def decodings() -> list[dict]:
    return [
        _decoding("single", 1, 39.0, 6.0),
        _decoding("average", 1, 39.5, 6.0),
        _decoding("ema", 1, 39.2, 5.0),
        _decoding("single", 2, 38.0, 6.0),
        _decoding("average", 2, 38.1, 6.0),
        _decoding("ema", 2, 39.4, 7.0),
        _decoding("ensemble", None, 40.0, 18.0),
        _decoding("ensemble-ema", None, 41.3, 24.0),
    ]


def test_summary_pairs_each_kind_with_single_by_seed(load_benchmark, decodings):
    summary = load_benchmark("beyond_one_report").summarize(decodings)

    assert summary["single"]["bleu_mean"] == pytest.approx(38.5)
    assert summary["single"]["bleu_sd"] == pytest.approx(0.71, abs=0.01)  # sd of 39, 38
    assert summary["average"]["minus_single_mean"] == pytest.approx(0.3)  # +0.5, +0.1
    assert summary["ema"]["minus_single_mean"] == pytest.approx(0.8)  # +0.2, +1.4
    assert "minus_single_mean" not in summary["single"]
    assert "minus_single_mean" not in summary["ensemble-ema"]
    assert summary["ensemble"]["bleu_sd"] is None  # one decoding


def test_each_ensemble_is_set_against_its_own_members(load_benchmark, decodings):
    beyond_one_report = load_benchmark("beyond_one_report")
    summary = beyond_one_report.summarize(decodings)

    plain = beyond_one_report.ensemble_verdict("ensemble", summary, decodings)
    ema = beyond_one_report.ensemble_verdict("ensemble-ema", summary, decodings)

    assert plain["members"] == "single"
    assert plain["gain"] == pytest.approx(1.5) and plain["gain_met"]  # 40.0 - 38.5
    assert plain["slowdown"] == pytest.approx(3.0) and plain["slowdown_met"]  # 18 / 6
    assert not plain["bleu_met"]  # 40.0 < 41.0
    assert ema["gain"] == pytest.approx(2.0) and ema["bleu_met"]  # 41.3 - 39.3
    assert ema["slowdown"] == pytest.approx(4.0) and not ema["slowdown_met"]  # 24 / 6


def test_runs_are_compared_at_the_fewest_updates_any_validated_at(load_benchmark, tmp_path):
    """Each run's last validation at or before the earliest of the runs' last validations,
    from its CSV log; a run that had not validated by then counts in no mean."""
    trained = []
    for kind, updates, logged in [
        ("plain", 200, [(99, "30.0"), (199, "31.0")]),
        ("ema", 300, [(99, "30.5"), (199, "32.0"), (299, "33.0")]),
        ("ema", 300, [(250, "40.0")]),
    ]:
        run = tmp_path / f"{kind}-{len(trained)}"
        log = run / "lightning_logs" / "version_0"
        log.mkdir(parents=True)
        rows = ["epoch,step,train_loss,val_bleu", "0,50,2.0,"]
        rows += [f"{i},{step},,{bleu}" for i, (step, bleu) in enumerate(logged)]
        (log / "metrics.csv").write_text("\n".join(rows) + "\n")
        trained.append({"kind": kind, "updates": updates, "checkpoints": str(run / "checkpoints")})

    found = load_benchmark("beyond_one_report").validation_at(trained)

    assert found["updates"] == 199
    assert found["plain"]["mean"] == 31.0 and found["ema"]["mean"] == 32.0  # not 33.0 or 40.0
    assert found["plain"]["n"] == 1 and found["ema"]["n"] == 1  # the third validated later
    assert [t["val_bleu_at_equal_updates"] for t in trained] == [31.0, 32.0, None]


def test_side_by_side_jobs_run_at_once_each_on_its_core(load_benchmark, tmp_path):
    """Each job waits for the other's file, so they finish only if they run together."""
    common = load_benchmark("common")
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


def test_a_failed_job_stops_the_others_and_raises_with_its_log(load_benchmark, tmp_path):
    common = load_benchmark("common")
    failing = [sys.executable, "-c", "import sys; sys.exit('no such corpus: x.de')"]
    sleeping = [sys.executable, "-c", "import time; time.sleep(120)"]
    jobs = [common.Job(sleeping, tmp_path / "sleep.log"), common.Job(failing, tmp_path / "x.log")]
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="no such corpus"):
        common.run_together(jobs)
    assert time.monotonic() - start < 60  # the sleeper was stopped, not waited for
