"""Two CPU processes (gloo): sharded batches, distributed evaluation, a DDP training run."""

import json
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import pytest
import torch.distributed
import torch.multiprocessing
from lightning.pytorch import Trainer

from seq2seq.batching import TokenBatchSampler
from seq2seq.cli.train import DEMO_CONFIG
from seq2seq.datamodule import TranslationDataModule, dataset_costs
from seq2seq.loss import smoothed_cross_entropy
from seq2seq.model import Seq2Seq
from seq2seq.system import TranslationModule, mean_over_all_tokens


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


@contextmanager
def _gloo_group(rank: int, port: int) -> Iterator[None]:
    """Process `rank` of a 2-process gloo group on localhost, for the block's duration."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_rank_batches(rank: int, port: int, corpus: Path, out: Path) -> None:
    """In process `rank` of 2: the training batches the data module gives it in epochs 0 and 1."""
    with _gloo_group(rank, port):
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
    with _gloo_group(rank, port):
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


def test_only_rank_zero_trains_sentencepiece(tiny_corpus: Path, tmp_path: Path) -> None:
    torch.multiprocessing.spawn(
        _write_rank_tokenizer, args=(_free_port(), tiny_corpus, tmp_path), nprocs=2, join=True
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["trained"] for r in ranks] == [True, False]
    assert ranks[0]["src"] == ranks[1]["src"] and ranks[0]["tgt"] == ranks[1]["tgt"]


def _grad_step(model: Seq2Seq, rows: list[int], world_size: int, reduce_sum) -> None:
    """Backward of the training loss of `rows` of the fixed batch below."""
    src, src_lengths, tgt_in, tgt_out = _fixed_batch(rows)
    logits = model(src, src_lengths, tgt_in)
    flat = logits.flatten(0, 1), tgt_out.flatten()
    loss_sum, _ = smoothed_cross_entropy(*flat, smoothing=0.1, pad_id=0)
    all_tokens = reduce_sum((tgt_out != 0).sum().float())
    mean_over_all_tokens(loss_sum, all_tokens, world_size).backward()


def _fixed_batch(rows: list[int]) -> tuple[torch.Tensor, ...]:
    """Rows of 4 sentence pairs of different lengths, padded to the longest of `rows`."""
    gen = torch.Generator().manual_seed(3)
    pairs = [
        (torch.randint(4, 17, (n,), generator=gen), torch.randint(4, 19, (m,), generator=gen))
        for n, m in [(3, 2), (7, 9), (5, 8), (6, 11)]
    ]
    chosen = [pairs[i] for i in rows]
    src = torch.nn.utils.rnn.pad_sequence([s for s, _ in chosen], batch_first=True)
    tgt = [torch.cat([torch.tensor([2]), t, torch.tensor([3])]) for _, t in chosen]
    tgt = torch.nn.utils.rnn.pad_sequence(tgt, batch_first=True)
    return src, torch.tensor([len(s) for s, _ in chosen]), tgt[:, :-1], tgt[:, 1:]


def _tiny_model() -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(17, 19, embed_dim=8, hidden_size=8, dropout=0.0)


def _write_rank_gradient(rank: int, port: int, out: Path) -> None:
    """Process `rank` of 2 takes sentence 0 (rank 0: few tokens) or 1-3 (rank 1: many)."""
    with _gloo_group(rank, port):
        model = torch.nn.parallel.DistributedDataParallel(_tiny_model())

        def reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
            torch.distributed.all_reduce(tensor)
            return tensor

        _grad_step(model, [[0], [1, 2, 3]][rank], 2, reduce_sum)
        grads = {name: p.grad for name, p in model.module.named_parameters()}
        torch.save(grads, out / f"grad{rank}.pt")
        # DDP's reducer holds the process group: freed after the group is destroyed, it
        # would free the group itself with the GIL held, while a gloo thread may wait for
        # the GIL (a deadlock seen at random). Free it first.
        del model


def test_ddp_gradient_equals_the_gradient_of_the_whole_batch(tmp_path: Path) -> None:
    """The loss is normalized by the target tokens of all processes, not each one's own."""
    torch.multiprocessing.spawn(_write_rank_gradient, args=(_free_port(), tmp_path), nprocs=2)
    ddp = torch.load(tmp_path / "grad0.pt")
    whole = _tiny_model()
    _grad_step(whole, [0, 1, 2, 3], 1, lambda t: t)
    for name, param in whole.named_parameters():
        torch.testing.assert_close(ddp[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)
    per_process = _tiny_model()  # each process's own mean, then DDP's average: not the same
    for rows in ([0], [1, 2, 3]):
        _grad_step(per_process, rows, 1, lambda t: t)
    weight = "decoder.output.weight"
    averaged = dict(per_process.named_parameters())[weight].grad / 2
    assert not torch.allclose(averaged, dict(whole.named_parameters())[weight].grad, rtol=1e-3)


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
