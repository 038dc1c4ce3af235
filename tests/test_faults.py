"""Faults: non-finite losses, untrusted files, half-written or concurrently built caches."""

import logging
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from seq2seq.cli.train import fit_and_test
from seq2seq.datamodule import MARKER, TranslationDataModule
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq

ROOT = Path(__file__).resolve().parents[1]
TRAIN_DEMO = [ROOT / "scripts" / "train.py", "--config", ROOT / "configs" / "demo.yaml"]


def poison_training_batches(monkeypatch: pytest.MonkeyPatch, bad: Callable[[int], bool]) -> None:
    """Make the decoder outputs NaN in the training forward passes whose number (from 0)
    is `bad`."""
    original, calls = Seq2Seq.features, []

    def features(self: Seq2Seq, *args: torch.Tensor) -> torch.Tensor:
        outputs = original(self, *args)
        if not self.training:
            return outputs
        calls.append(None)
        return outputs * math.nan if bad(len(calls) - 1) else outputs

    monkeypatch.setattr(Seq2Seq, "features", features)


def run_args(train_args: Callable[..., list[str]], out: Path) -> list[str]:
    return train_args(
        out,
        *("--trainer.max_epochs", "1", "--data.test", "null", "--save_last_every_n_steps", "2"),
        *("--model.max_nonfinite_losses", "3"),
    )


def test_a_non_finite_loss_skips_its_batch(
    train_args: Callable[..., list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    poison_training_batches(monkeypatch, lambda call: call == 2)
    with caplog.at_level(logging.WARNING, logger="seq2seq"):
        cli = fit_and_test(run_args(train_args, tmp_path))
    assert "non-finite training loss at epoch 0, batch 2, step 2: batch skipped" in caplog.text
    # Adam counts the updates it made to each parameter: one fewer than batches.
    optimizer = cli.trainer.optimizers[0]
    updates = {int(optimizer.state[p]["step"]) for p in cli.model.parameters()}
    assert updates == {cli.trainer.num_training_batches - 1}
    assert all(p.isfinite().all() for p in cli.model.parameters())


def test_non_finite_losses_in_a_row_stop_training(
    train_args: Callable[..., list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison_training_batches(monkeypatch, lambda call: call >= 4)
    with pytest.raises(UserError, match="3 batches in a row had a non-finite loss"):
        fit_and_test(run_args(train_args, tmp_path))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert 4 <= last["global_step"] <= 6  # written before the third bad batch
    assert all(t.isfinite().all() for t in last["state_dict"].values())


class _Payload:
    """Unpickling this runs `touch <path>`: what a booby-trapped checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (subprocess.call, (["touch", str(self.path)],))


def test_a_checkpoint_that_runs_code_is_refused(trained: Path, tmp_path: Path) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.ckpt"
    state = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    torch.save({**state, "payload": _Payload(marker)}, evil)
    commands = {
        "translate": [ROOT / "scripts" / "translate.py", "--checkpoint", evil, "--greedy"],
        "resume": [*TRAIN_DEMO, "--trainer.max_epochs", "1", "--ckpt_path", evil],
    }
    for name, command in commands.items():
        result = subprocess.run(
            [sys.executable, *map(str, command)],
            input="drei\n",
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert result.returncode == 2, (name, result.stderr[-1500:])
        assert "Traceback" not in result.stderr, name
        assert str(evil) in result.stderr.strip().splitlines()[-1], name
        assert not marker.exists(), f"{name}: the payload ran"


def test_yaml_configs_cannot_run_code(tmp_path: Path) -> None:
    marker, config = tmp_path / "pwned", tmp_path / "evil.yaml"
    config.write_text(f"seed_everything: !!python/object/apply:os.system ['touch {marker}']\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode != 0
    assert not marker.exists()


def _data(corpus: Path, cache: Path) -> TranslationDataModule:
    return TranslationDataModule(
        train=str(corpus / "train"), vocab_size=60, max_tokens=400, cache_dir=str(cache)
    )


def test_a_half_written_cache_is_rebuilt_not_used(
    tiny_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    pairs = len(_data(tiny_corpus, cache).train_dataset)
    (split,) = cache.glob("data-train-*")
    (split / MARKER).unlink()  # as if killed while writing: no marker
    for arrow in split.glob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:100])
    (cache / ".data-train-leftover.tmp").mkdir()  # a killed build's staging folder
    with caplog.at_level(logging.INFO, logger="seq2seq"):
        rebuilt = _data(tiny_corpus, cache).train_dataset
    assert "building train dataset" in caplog.text
    assert len(rebuilt) == pairs and (split / MARKER).is_file()


def _prepare(rank: int, corpus: Path, cache: Path, start: Any) -> None:
    start.wait()  # both processes build at the same moment
    data = _data(corpus, cache)
    data.prepare_data()
    (cache.parent / f"pairs{rank}").write_text(str(len(data.train_dataset)))


def test_two_processes_preparing_the_same_corpus_at_once(tiny_corpus: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    start = torch.multiprocessing.get_context("spawn").Barrier(2)
    torch.multiprocessing.spawn(_prepare, args=(tiny_corpus, cache, start), nprocs=2, join=True)
    counts = {(tmp_path / f"pairs{rank}").read_text() for rank in (0, 1)}
    assert counts == {str(len(_data(tiny_corpus, cache).train_dataset))}
    assert len(list(cache.glob("data-train-*"))) == 1
    assert not list(cache.glob(".*"))  # no staging folder left behind
