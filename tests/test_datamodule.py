"""TranslationDataModule on the tiny corpus: tokenizer, caches, cleaning, loaders."""

import logging
import re
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from packaging.specifiers import SpecifierSet

from seq2seq import cache as cache_module
from seq2seq import datamodule as datamodule_module
from seq2seq.datamodule import TranslationDataModule, _epoch_batch_counts, _no_distributed_sampler
from seq2seq.errors import UserError
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

LONG_DE = " ".join(["siebenhundertsiebenundsiebzigtausend"] * 40)
LONG_EN = " ".join(["seven hundred and seventy-seven thousand"] * 40)
MAX_LEN, MAX_TOKENS = 60, 200
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def append(prefix: Path, pairs: list[tuple[str, str]]) -> None:
    for lang, side in (("de", 0), ("en", 1)):
        with open(f"{prefix}.{lang}", "a", encoding="utf-8") as f:
            f.writelines(pair[side] + "\n" for pair in pairs)


@pytest.fixture
def corpus(tiny_corpus: Path, tmp_path: Path) -> Path:
    """The tiny corpus plus blank and overlong pairs in train and val."""
    out = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, out)
    append(out / "train", [("", "nothing"), ("leer", "  "), (LONG_DE, LONG_EN)])
    append(out / "val", [("", ""), (LONG_DE, LONG_EN)])
    return out


def make(corpus: Path, tmp_path: Path, **settings: object) -> TranslationDataModule:
    options = dict(
        train=str(corpus / "train"),
        val=str(corpus / "val"),
        vocab_size=80,
        spm_type="bpe",
        max_len=MAX_LEN,
        max_tokens=MAX_TOKENS,
        cache_dir=str(tmp_path / "cache"),
    )
    return TranslationDataModule(**{**options, **settings})


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_init_reads_nothing_and_vocab_is_lazy(corpus: Path, tmp_path: Path) -> None:
    dm = make(corpus, tmp_path)
    assert not (tmp_path / "cache").exists()
    assert 4 < dm.src_vocab_size <= 80
    assert dm.tgt_vocab_size == dm.src_vocab_size  # joint
    assert (dm.pad_id, dm.bos_id, dm.eos_id) == (PAD_ID, BOS_ID, EOS_ID)
    separate = make(corpus, tmp_path, joint_vocab=False)
    assert not separate.tokenizer.joint


def test_train_batches_within_max_tokens(corpus: Path, tmp_path: Path) -> None:
    dm = make(corpus, tmp_path)
    dm.setup("fit")
    seen = []
    for batch in dm.train_dataloader():
        size = batch["src"].shape[0]
        assert size * max(batch["src"].shape[1], batch["tgt_in"].shape[1]) <= MAX_TOKENS
        assert torch.all(batch["tgt_in"][:, 0] == BOS_ID)
        last = batch["tgt_lengths"] - 1
        assert torch.all(batch["tgt_out"][torch.arange(size), last] == EOS_ID)
        assert "tgt_text" not in batch
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(dm.train_dataset)))


def test_cleaning_drops_from_train_but_keeps_val(
    corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seq2seq")
    dm = make(corpus, tmp_path)
    dm.prepare_data()
    pairs = 303
    assert f"dropped 2 of {pairs} pairs with a blank side" in caplog.text
    de, en = (
        (corpus / "train.de").read_text().splitlines(),
        (corpus / "train.en").read_text().splitlines(),
    )
    kept = [(s, t) for s, t in zip(de, en, strict=True) if s.strip() and t.strip()]
    src, tgt = (
        dm.tokenizer.encode_src([s for s, _ in kept]),
        dm.tokenizer.encode_tgt([t for _, t in kept]),
    )
    overlong = sum(len(s) > MAX_LEN or len(t) > MAX_LEN for s, t in zip(src, tgt, strict=True))
    assert overlong >= 1
    assert f"dropped {overlong} of {pairs - 2} pairs with more than {MAX_LEN} tokens" in caplog.text
    assert len(dm.train_dataset) == pairs - 2 - overlong

    dm.setup("validate")
    val = dm.val_dataset
    assert len(val) == line_count(corpus / "val.de")
    assert val[len(val) - 2]["src_ids"] == [] and val[len(val) - 2]["tgt_text"] == ""
    texts, indices = [], []
    for batch in dm.val_dataloader():  # the long pair gets a batch of its own size
        texts += batch["tgt_text"]
        indices += batch["index"].tolist()
    assert sorted(indices) == list(range(len(val)))
    assert LONG_EN in texts and "" in texts
    assert "val has a pair of" in caplog.text  # longer than max_tokens, yet kept


def test_second_instance_reuses_caches(
    corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make(corpus, tmp_path).prepare_data()
    caplog.set_level(logging.INFO, logger="seq2seq")
    caplog.clear()
    dm = make(corpus, tmp_path)
    dm.prepare_data()
    assert "reusing cached SentencePiece model" in caplog.text
    assert "reusing cached train dataset" in caplog.text
    assert "reusing cached val dataset" in caplog.text
    assert "training SentencePiece" not in caplog.text
    assert "building" not in caplog.text
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_changed_corpus_invalidates_cache(
    corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make(corpus, tmp_path).prepare_data()
    append(corpus / "train", [("eins", "one")])
    caplog.set_level(logging.INFO, logger="seq2seq")
    caplog.clear()
    dm = make(corpus, tmp_path)
    dm.prepare_data()
    assert "training SentencePiece" in caplog.text
    assert "building train dataset" in caplog.text
    assert "eins" in dm.tokenizer.decode_tgt(dm.tokenizer.encode_tgt(["eins"]))


def test_empty_after_cleaning_raises(corpus: Path, tmp_path: Path) -> None:
    (spm_model,) = make(corpus, tmp_path).tokenizer.save(tmp_path / "spm")
    blank = tmp_path / "blank"
    append(blank, [("eins", ""), ("", "two"), (" ", " ")])
    dm = make(corpus, tmp_path, train=str(blank), spm_model=str(spm_model))
    with pytest.raises(UserError, match="empty after dropping pairs with a blank side"):
        dm.prepare_data()
    dm = make(corpus, tmp_path, train=str(corpus / "train"), spm_model=str(spm_model), max_len=1)
    with pytest.raises(UserError, match="empty after dropping pairs with more than 1 tokens"):
        dm.setup("fit")


def test_missing_files_raise_before_training(corpus: Path, tmp_path: Path) -> None:
    dm = make(corpus, tmp_path, train=str(tmp_path / "absent"))
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "absent.de"))):
        _ = dm.src_vocab_size
    dm = make(corpus, tmp_path, test=str(tmp_path / "absent"))
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "absent.de"))):
        dm.prepare_data()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"train": None}, "exactly one of data.train"),
        ({"dataset": "some/dataset"}, "exactly one of data.train"),
        ({"max_tokens": MAX_LEN}, "data.max_tokens"),
        ({"vocab_size": 4}, "data.vocab_size"),
        ({"tgt_lang": "de"}, "must differ"),
        ({"spm_tgt_model": "x.model"}, "data.spm_tgt_model"),
    ],
)
def test_invalid_settings(corpus: Path, tmp_path: Path, settings: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        make(corpus, tmp_path, **settings)


def test_hugging_face_dataset_source(tiny_corpus: Path, tmp_path: Path) -> None:
    splits = {}
    for name, split in (("train", "train"), ("val", "validation")):
        de = (tiny_corpus / f"{name}.de").read_text().splitlines()
        en = (tiny_corpus / f"{name}.en").read_text().splitlines()
        rows = [{"de": s, "en": t} for s, t in zip(de, en, strict=True)]
        splits[split] = datasets.Dataset.from_dict({"translation": rows})
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "hf"))
    dm = make(tiny_corpus, tmp_path, train=None, val=None, dataset=str(tmp_path / "hf"))
    dm.setup("fit")
    assert len(dm.train_dataset) == 300
    batch = next(iter(dm.val_dataloader()))
    assert set(batch["tgt_text"]) <= set(en)
    with pytest.raises(UserError, match="no split 'test'"):
        dm.setup("test")


def test_workers_and_processes(corpus: Path, tmp_path: Path) -> None:
    dm = make(corpus, tmp_path, num_proc=2, num_workers=1)
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    assert sum(len(b["index"]) for b in batches) == len(dm.val_dataset)


class _RecordOrder(L.LightningModule):
    """Records the example indices of each training epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.orders: dict[int, list[int]] = {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.orders.setdefault(self.current_epoch, []).extend(batch["index"].tolist())
        return self.weight.sum() * 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def quiet_trainer(tmp_path: Path, **settings: Any) -> L.Trainer:
    """A 2-epoch CPU Trainer that logs, saves and shows nothing."""
    return L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        **settings,
    )


def test_lightning_reshuffles_each_epoch(corpus: Path, tmp_path: Path) -> None:
    dm, module = make(corpus, tmp_path, val=None), _RecordOrder()
    trainer = quiet_trainer(tmp_path)
    trainer.fit(module, datamodule=dm)
    first, second = module.orders[0], module.orders[1]
    assert sorted(first) == sorted(second) == list(range(len(dm.train_dataset)))
    assert first != second


@pytest.mark.realdata
def test_multi30k_tokenizer(multi30k: Path, tmp_path: Path) -> None:
    dm = TranslationDataModule(
        train=str(multi30k / "train"),
        vocab_size=500,
        spm_input_sentence_size=5000,
        cache_dir=str(tmp_path / "cache"),
    )
    assert 400 < dm.src_vocab_size <= 500
    text = "Two young people are outside near many bushes."
    assert dm.tokenizer.decode_tgt(dm.tokenizer.encode_tgt([text])) == [text]


def test_hand_made_trainers_still_get_the_data_modules_sampler() -> None:
    """The one private Lightning attribute used: a hand-made Trainer's distributed-sampler
    switch (scripts/train.py sets the public argument). If Lightning moves it, such a
    Trainer needs use_distributed_sampler=False (Lightning's own error says so)."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    connector = trainer._accelerator_connector
    assert connector.use_distributed_sampler, "expected Lightning's default"
    _no_distributed_sampler(trainer)
    assert connector.use_distributed_sampler is False


class _RecordCounts(L.Callback):
    """Lightning's counts of the epoch's batches at each batch's end, where `last.ckpt` is saved."""

    def __init__(self) -> None:
        self.counts: list[tuple[int, ...]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *_: object) -> None:
        c = _epoch_batch_counts(trainer)
        self.counts.append((trainer.current_epoch, c.ready, c.started, c.processed, c.completed))


def test_lightnings_batch_counts_are_what_resuming_reads(tmp_path: Path) -> None:
    """The guard of the one use of Lightning's loops (no public API counts the batches
    trained): at a batch's end, `processed` includes that batch, and each epoch counts
    from 0. Where it fails, Lightning changed its loops: fix `_epoch_batch_counts` (and run
    tests/test_resume.py) before widening pyproject.toml's range for lightning."""
    (pinned,) = re.findall(r'"lightning([<>=!~][^"]*)"', PYPROJECT.read_text())
    assert version("lightning") in SpecifierSet(pinned)
    recorder = _RecordCounts()
    trainer = quiet_trainer(
        tmp_path, limit_train_batches=3, limit_val_batches=0, callbacks=[recorder]
    )
    trainer.fit(BoringModel())
    assert recorder.counts == [(e, i + 1, i + 1, i + 1, i) for e in (0, 1) for i in range(3)]


def test_other_ranks_load_rank_zeros_sentencepiece_model(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the process group exists (as when the CLI builds the data module under
    torchrun), a process of rank > 0 never trains SentencePiece: it waits for rank 0's."""
    settings = {"train": str(corpus / "train"), "vocab_size": 60, "cache_dir": str(tmp_path)}
    monkeypatch.setattr(cache_module.rank_zero_only, "rank", 1)
    monkeypatch.setattr(datamodule_module, "SPM_WAIT_SECONDS", 1.0)
    with pytest.raises(UserError, match="rank 0 did not write its SentencePiece model"):
        _ = TranslationDataModule(**settings).tokenizer
    monkeypatch.setattr(cache_module.rank_zero_only, "rank", 0)
    trained = TranslationDataModule(**settings).tokenizer
    monkeypatch.setattr(cache_module.rank_zero_only, "rank", 1)
    assert TranslationDataModule(**settings).tokenizer.to_dict() == trained.to_dict()
