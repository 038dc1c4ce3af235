"""Two CPU processes (gloo): sharded batches, distributed evaluation, a DDP training run."""

import json
import logging
import socket
import subprocess
import sys
from itertools import chain
from pathlib import Path

import pytest
import torch.distributed
import torch.multiprocessing
from lightning.pytorch import Trainer

from seq2seq.batching import TokenBatchSampler
from seq2seq.datamodule import TranslationDataModule, dataset_costs
from seq2seq.system import TranslationModule
from seq2seq.train import DEMO_CONFIG


def validate(checkpoint: Path, data: TranslationDataModule, **trainer_args) -> dict[str, float]:
    model = TranslationModule.load_from_checkpoint(checkpoint)
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,  # and no use_distributed_sampler: the data module's job
        **trainer_args,
    )
    (metrics,) = trainer.validate(model, datamodule=data, verbose=False)
    return metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_rank_batches(rank: int, port: int, corpus: Path, out: Path) -> None:
    """In process `rank` of 2: the training batches the data module gives it in epochs 0 and 1."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        data = TranslationDataModule(
            train=str(corpus / "train"), vocab_size=60, max_tokens=120, cache_dir=str(out / "cache")
        )
        sampler = data.train_dataloader().batch_sampler
        epochs = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            epochs.append(list(sampler))
        (out / f"rank{rank}.json").write_text(json.dumps(epochs))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_sampler_over_two_gloo_processes(tiny_corpus: Path, tmp_path: Path) -> None:
    torch.multiprocessing.spawn(
        _write_rank_batches, args=(_free_port(), tiny_corpus, tmp_path), nprocs=2, join=True
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    data = TranslationDataModule(
        train=str(tiny_corpus / "train"),
        vocab_size=60,
        max_tokens=120,
        cache_dir=str(tmp_path / "cache"),
    )
    costs = dataset_costs(data.train_dataset)
    for epoch in (0, 1):
        shards = [ranks[r][epoch] for r in (0, 1)]
        assert len(shards[0]) == len(shards[1]) > 1
        indices = list(chain.from_iterable(chain.from_iterable(shards)))
        assert set(indices) == set(range(len(costs)))  # every example, on one rank or the other
        repeated = len(indices) - len(costs)  # the padding batch, if the count was odd
        assert repeated == 0 or repeated == len(shards[0][0])
        for batch in chain.from_iterable(shards):
            assert len(batch) * costs[batch].max() <= 120
        # The same order in a new run with the same seed: the data module's own sampler here.
        for rank in (0, 1):
            again = TokenBatchSampler(costs, 120, seed=data.seed, num_replicas=2, rank=rank)
            again.set_epoch(epoch)
            assert list(again) == shards[rank]
    assert ranks[0][0] != ranks[0][1]  # a new order each epoch


def _write_rank_tokenizer(rank: int, port: int, corpus: Path, out: Path) -> None:
    """In process `rank` of 2, over an empty cache: its SentencePiece models, and whether
    it trained them."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        messages: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: messages.append(record.getMessage())
        logging.getLogger("seq2seq").addHandler(handler)
        logging.getLogger("seq2seq").setLevel(logging.INFO)
        data = TranslationDataModule(
            train=str(corpus / "train"), vocab_size=60, cache_dir=str(out / "cache")
        )
        models = data.tokenizer.to_dict()
        trained = any(m.startswith("training SentencePiece") for m in messages)
        result = {"src": models["src"].hex(), "tgt": models["tgt"].hex(), "trained": trained}
        (out / f"rank{rank}.json").write_text(json.dumps(result))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_only_rank_zero_trains_sentencepiece(tiny_corpus: Path, tmp_path: Path) -> None:
    torch.multiprocessing.spawn(
        _write_rank_tokenizer, args=(_free_port(), tiny_corpus, tmp_path), nprocs=2, join=True
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["trained"] for r in ranks] == [True, False]
    assert ranks[0]["src"] == ranks[1]["src"] and ranks[0]["tgt"] == ranks[1]["tgt"]


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
