"""Resume after kill -9 mid-epoch: training goes on exactly as if it had never stopped."""

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

TRAIN = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
EPOCHS = 2


def train_command(train_args: Callable[..., list[str]], out: Path, *extra: str) -> list[str]:
    """A run of 3 epochs that logs the loss at every step and saves last.ckpt every 2 steps."""
    run = train_args(
        out,
        *("--trainer.max_epochs", str(EPOCHS), "--trainer.log_every_n_steps", "1"),
        *("--save_last_every_n_steps", "2", "--data.test", "null"),
        *("--model.dropout", "0.3", "--early_stopping.patience", "100"),
        *extra,
    )
    return [sys.executable, str(TRAIN), *run]


def losses(out: Path) -> dict[int, float]:
    """step -> train_loss, from every CSV log under `out` (one per run, resumed runs too)."""
    by_step: dict[int, float] = {}
    for log in sorted(out.glob("lightning_logs/version_*/metrics.csv")):
        with open(log) as f:
            for row in csv.DictReader(f):
                if row.get("train_loss"):
                    by_step[int(row["step"])] = float(row["train_loss"])
    return by_step


def kill_after_mid_epoch_checkpoint(command: list[str], checkpoint: Path) -> int:
    """Start training, kill -9 it once `checkpoint` holds a mid-epoch state; -> its step."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        stderr = proc.communicate()[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"training ended before the kill:\n{stderr[-2000:]}"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return state["global_step"]


def test_resume_after_kill_continues_the_same_loss_curve(
    train_args: Callable[..., list[str]], tmp_path: Path
) -> None:
    whole = tmp_path / "whole"
    subprocess.run(train_command(train_args, whole), check=True, capture_output=True)
    expected = losses(whole)
    steps_per_epoch = len(expected) // EPOCHS
    assert steps_per_epoch >= 4 and len(expected) == EPOCHS * steps_per_epoch

    broken = tmp_path / "broken"
    last = broken / "checkpoints" / "last.ckpt"
    killed_at = kill_after_mid_epoch_checkpoint(train_command(train_args, broken), last)
    assert 0 < killed_at < len(expected)
    if killed_at % steps_per_epoch == 0:
        pytest.fail(f"killed at step {killed_at}, an epoch boundary: the test wants mid-epoch")
    resumed = subprocess.run(
        train_command(train_args, broken, "--ckpt_path", str(last)), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "reusing cached" in resumed.stderr  # the data cache is not rebuilt

    after = {step: loss for step, loss in losses(broken).items() if step >= killed_at}
    assert sorted(after) == [step for step in sorted(expected) if step >= killed_at]
    for step, loss in after.items():
        assert loss == pytest.approx(expected[step], rel=1e-5), f"step {step}"
