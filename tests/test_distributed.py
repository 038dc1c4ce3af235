"""Two CPU processes (gloo): distributed evaluation equals single-process evaluation."""

from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from seq2seq.datamodule import TranslationDataModule
from seq2seq.system import TranslationModule


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
