"""Two CPU processes (gloo): distributed evaluation equals single-process evaluation."""

import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from seq2seq.datamodule import TranslationDataModule
from seq2seq.system import TranslationModule
from seq2seq.train import DEMO_CONFIG


def validate(checkpoint: Path, data: TranslationDataModule, **trainer_args) -> dict[str, float]:
    model = TranslationModule.load_from_checkpoint(checkpoint)
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        **trainer_args,
    )
    (metrics,) = trainer.validate(model, datamodule=data, verbose=False)
    return metrics


def test_ddp_validation_equals_single_process(trained: Path, tiny_corpus: Path) -> None:
    data = TranslationDataModule(
        train=str(tiny_corpus / "train"),
        val=str(tiny_corpus / "val"),
        vocab_size=60,
        max_tokens=120,
        cache_dir=str(trained / "cache"),
    )
    checkpoint = trained / "checkpoints" / "best.ckpt"
    single = validate(checkpoint, data, devices=1)
    ddp = validate(checkpoint, data, devices=2, strategy="ddp_spawn")
    assert set(single) == {"val_loss", "val_ppl", "val_bleu", "val_chrf"}
    for name in ("val_bleu", "val_chrf", "val_loss"):
        assert ddp[name] == pytest.approx(single[name], abs=1e-9, rel=0), name
    assert single["val_chrf"] > 0


def test_ddp_training_run_of_the_demo(tmp_path: Path) -> None:
    """scripts/train.py under `--trainer.strategy ddp` on 2 CPU processes, then translate.py."""
    root = Path(__file__).resolve().parents[1]
    train = [sys.executable, str(root / "scripts" / "train.py"), "--config", str(DEMO_CONFIG)]
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    quick = [
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "20",
        "--trainer.enable_progress_bar",
        "false",
    ]
    result = subprocess.run(
        [*train, *ddp, *quick], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = tmp_path / "runs" / "demo" / "checkpoints" / "best.ckpt"
    assert checkpoint.is_file()
    translate = [
        sys.executable,
        str(root / "scripts" / "translate.py"),
        "--checkpoint",
        str(checkpoint),
        "--greedy",
    ]
    output = subprocess.run(
        translate, input="einundzwanzig\n\nzwölf\n", capture_output=True, text=True, timeout=120
    )
    assert output.returncode == 0, output.stderr[-2000:]
    assert len(output.stdout.split("\n")) == 4
