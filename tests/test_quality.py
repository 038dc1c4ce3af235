"""benchmarks/quality.py: each kind of decoding over seeds, paired with the first; each
ensemble against its members; the runs compared at equal updates; a run's updates;
JoeyNMT validating at our cadence, with its recipe's schedule."""

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from seq2seq.cli.train import fit_and_test


def _decoding(side: str, kind: str, seed: int | None, bleu: float, decode_s: float) -> dict:
    found = {"side": side, "kind": kind, "seed": seed, "bleu": bleu, "chrf": bleu + 20.0}
    return found | {"decode_s": decode_s}


@pytest.fixture
def quality(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("quality")


@pytest.fixture
def decodings() -> list[dict]:
    return [
        _decoding("ours", "best", 1, 39.0, 6.0),
        _decoding("ours", "average5", 1, 39.5, 6.0),
        _decoding("ema", "best", 1, 39.2, 5.0),
        _decoding("ours", "best", 2, 38.0, 6.0),
        _decoding("ours", "average5", 2, 38.1, 6.0),
        _decoding("ema", "best", 2, 39.4, 7.0),
        _decoding("ours", "ensemble", None, 40.0, 18.0) | {"members": "ours best"},
        _decoding("ema", "ensemble", None, 41.3, 24.0) | {"members": "ema best"},
    ]


def test_each_kind_is_paired_with_the_first_by_seed(quality: ModuleType, decodings) -> None:
    summary = quality.summarize(decodings)

    assert list(summary)[:3] == ["ours best", "ours average5", "ema best"]
    assert summary["ours best"]["bleu_mean"] == pytest.approx(38.5)
    assert summary["ours best"]["bleu_sd"] == pytest.approx(0.71, abs=0.01)  # sd of 39, 38
    assert summary["ours average5"]["minus_first_mean"] == pytest.approx(0.3)  # +0.5, +0.1
    assert summary["ema best"]["minus_first_mean"] == pytest.approx(0.8)  # +0.2, +1.4
    assert "minus_first_mean" not in summary["ours best"]
    assert "minus_first_mean" not in summary["ema ensemble"]  # no seed: no pair
    assert summary["ours ensemble"]["bleu_sd"] is None  # one decoding


def test_each_ensemble_is_set_against_its_own_members(quality: ModuleType, decodings) -> None:
    summary = quality.summarize(decodings)

    assert summary["ours ensemble"]["gain_over_members"] == pytest.approx(1.5)  # 40.0 - 38.5
    assert summary["ours ensemble"]["slowdown"] == pytest.approx(3.0)  # 18 / 6
    assert summary["ema ensemble"]["gain_over_members"] == pytest.approx(2.0)  # 41.3 - 39.3
    assert summary["ema ensemble"]["slowdown"] == pytest.approx(4.0)  # 24 / 6


def test_runs_are_compared_at_the_fewest_updates_any_validated_at(
    quality: ModuleType, tmp_path: Path
) -> None:
    """Each run's last validation at or before the earliest of the runs' last validations,
    from its CSV log; a run that had not validated by then counts in no mean."""
    trained = []
    for side, logged in [
        ("ours", [(99, "30.0"), (199, "31.0")]),
        ("ema", [(99, "30.5"), (199, "32.0"), (299, "33.0")]),
        ("ema", [(250, "40.0")]),
    ]:
        run = tmp_path / f"{side}-{len(trained)}"
        _csv_log(run, logged)
        trained.append({"side": side, "checkpoint": str(run / "checkpoints" / "best.ckpt")})

    found = quality.validation_at(trained)

    assert found["updates"] == 199
    assert found["ours"]["mean"] == 31.0 and found["ema"]["mean"] == 32.0  # not 33.0 or 40.0
    assert found["ours"]["n"] == 1 and found["ema"]["n"] == 1  # the third validated later
    assert [t["val_bleu_at_equal_updates"] for t in trained] == [31.0, 32.0, None]


def _csv_log(run: Path, logged: list[tuple[int, str]]) -> None:
    """A Lightning CSV log in `run` with a training row, then `logged` (step, val_bleu)."""
    log = run / "lightning_logs" / "version_0"
    log.mkdir(parents=True)
    rows = ["epoch,step,train_loss,val_bleu", "0,50,2.0,"]
    rows += [f"{i},{step},,{bleu}" for i, (step, bleu) in enumerate(logged)]
    (log / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_validation_curves_put_each_side_in_minutes(quality: ModuleType, tmp_path: Path) -> None:
    """Ours: validations logged at updates - 1, at its Timer's seconds per update as of its
    last save (420 updates in 1,680 s: 4 s); JoeyNMT: its validations.txt at its seconds
    per update (2 s), then its final weights' score at its last update."""
    _csv_log(tmp_path / "ours", [(118, "10.0"), (237, "20.0")])
    ours = {"side": "ours", "checkpoint": str(tmp_path / "ours" / "checkpoints" / "best.ckpt")}
    ours |= {"train_s": 1680.0, "timed_updates": 420}
    model_dir = tmp_path / "joeynmt"
    model_dir.mkdir()
    lines = [
        f"Steps: {s}\tloss: 3.0\tacc: 0.3\tppl: 20.0\tbleu: {b}\tLR: 0.001\t*"
        for s, b in [(60, 1.5), (120, 4.25)]
    ]
    (model_dir / "validations.txt").write_text("\n".join(lines) + "\n")
    joey = {"side": "joeynmt", "model_dir": str(model_dir), "train_s": 300.0, "updates": 150}
    joey["val_bleu_latest"] = 5.0

    minutes, bleu = quality.validation_curve(ours)
    np.testing.assert_allclose(minutes, [119 * 4 / 60, 238 * 4 / 60])
    np.testing.assert_allclose(bleu, [10.0, 20.0])
    minutes, bleu = quality.validation_curve(joey)
    np.testing.assert_allclose(minutes, [2.0, 4.0, 5.0])
    np.testing.assert_allclose(bleu, [1.5, 4.25, 5.0])


def test_joeynmt_validates_at_our_cadence_in_minutes(quality: ModuleType, tmp_path: Path) -> None:
    """Ours validated at epoch ends (every 119 updates) and once more at the time limit
    (update 400); 420 updates in 1,680 s: 4 s an update, 119 x 4 / 60 minutes between
    validations. At 90 of its updates a minute, JoeyNMT validates every 714 updates,
    to the multiple of its logging interval (20) nearest: 720."""
    _csv_log(tmp_path, [(118, "10.0"), (237, "20.0"), (356, "25.0"), (399, "26.0")])
    run = {"checkpoint": str(tmp_path / "checkpoints" / "best.ckpt")}
    minutes = quality.minutes_per_validation(run | {"train_s": 1680.0, "timed_updates": 420})

    assert minutes == pytest.approx(119 * 4 / 60)
    assert quality.peer.validation_freq(90.0, minutes) == 720
    assert quality.peer.validation_freq(1.0, minutes) == 20  # at least one logging interval


@pytest.mark.parametrize(
    ("schedule", "patience", "min_lr"), [("recipe", 1, 5e-5), ("toy", 5, None)]
)
def test_joeynmt_config_follows_the_named_recipe(
    quality: ModuleType, tmp_path: Path, schedule: str, patience: int, min_lr: float | None
) -> None:
    """`recipe`: iwslt_envi_xnmt.yaml's plateau (patience 1, factor 0.5, minimum 5e-5);
    `toy`: 2.3.0's toy recipes' (patience 5, its default minimum). Validation every
    `validation_freq` updates, a multiple of its logging interval as JoeyNMT demands."""
    hp = {"lr": 1e-3, "label_smoothing": 0.1, "cell": "gru", "hidden_size": 8}
    hp |= {"embed_dim": 8, "dropout": 0.3, "encoder_layers": 1, "decoder_layers": 1}
    hp |= {"bidirectional": True, "attention": "luong", "attention_score": "additive"}
    batch, spm_file, voc = (2000, "token"), tmp_path / "spm.model", tmp_path / "voc.txt"
    cfg = quality.peer.recipe_config(
        hp, {"max_len": 80}, tmp_path, spm_file, voc, batch, schedule, 720
    )

    training = cfg["training"]
    assert (training["patience"], training["decrease_factor"]) == (patience, 0.5)
    assert training.get("learning_rate_min") == min_lr
    assert training["validation_freq"] == 720 and 720 % training["logging_freq"] == 0
    assert cfg["model"]["decoder"]["attention"] == "bahdanau"  # its name for additive scores


def test_updates_are_the_logs_not_the_last_saves(
    quality: ModuleType, train_args: Callable[..., list[str]], tmp_path: Path
) -> None:
    """last.ckpt is saved at step 3 (every 3 steps), not at the validation of step 4: at lr
    0 it scores as the one of step 2, improving nothing, as at the end of a run that the
    time limit stops. The CSV log counts every update."""
    steps = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4")
    validations = ("--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1")
    saving = ("--save_last_every_n_steps", "3", "--model.lr", "0", "--data.test", "null")
    cli = fit_and_test(train_args(tmp_path, *steps, *validations, *saving))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert saved == 3 and cli.trainer.global_step == 4
    assert quality.logged_updates(tmp_path) == cli.trainer.global_step
