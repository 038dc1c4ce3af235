"""The CUDA paths against the CPU's: the model, the searches, training in each precision.

They run where a CUDA device is (benchmarks/gpu_check.sh runs them first) and skip
elsewhere, saying so.
"""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_model import COMBINATIONS, SRC_VOCAB, TGT_VOCAB, padded_batch, tiny_model

from seq2seq.cli.train import fit_and_test
from seq2seq.search import beam_search, greedy_search
from seq2seq.translator import Translator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _exact_fp32() -> None:
    """cuDNN and cuBLAS in true fp32 (no TF32), so that CUDA and CPU agree to rounding."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.mark.parametrize(("cell", "attention"), COMBINATIONS)
def test_log_probs_on_cuda_equal_the_cpu_s(cell: str, attention: str) -> None:
    model = tiny_model(cell, attention)
    src, src_lengths = padded_batch([6, 4, 1], SRC_VOCAB)
    tgt_in, _ = padded_batch([5, 5, 5], TGT_VOCAB)
    expected = model(src, src_lengths, tgt_in).log_softmax(-1)
    model.to(CUDA)
    got = model(src.to(CUDA), src_lengths, tgt_in.to(CUDA)).log_softmax(-1)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_searches_on_cuda_find_the_cpu_s_outputs(cell: str) -> None:
    model = tiny_model(cell, "luong/additive")
    src, src_lengths = padded_batch([7, 5, 3, 1], SRC_VOCAB)
    expected_greedy = greedy_search(model, src, src_lengths)
    expected_beam = beam_search(model, src, src_lengths, beam_size=3, nbest=2)
    model.to(CUDA)
    greedy = greedy_search(model, src.to(CUDA), src_lengths.to(CUDA))
    beam = beam_search(model, src.to(CUDA), src_lengths.to(CUDA), beam_size=3, nbest=2)
    assert [h.tokens for h in greedy] == [h.tokens for h in expected_greedy]
    assert [[h.tokens for h in n] for n in beam] == [[h.tokens for h in n] for n in expected_beam]
    for found, expected in zip(beam, expected_beam, strict=True):
        assert [h.score for h in found] == pytest.approx([h.score for h in expected], abs=1e-4)


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_translator_on_cuda(trained: Path, precision: str) -> None:
    """fp32 gives the CPU's translations; bf16 (autocast) translates every line."""
    sentences = ["einundzwanzig", "", "dreihundert", "vierzehn"]
    checkpoint = trained / "checkpoints" / "best.ckpt"
    cpu = Translator.from_checkpoint(checkpoint, device="cpu").translate(sentences, beam_size=2)
    cuda = Translator.from_checkpoint(checkpoint, device="cuda")
    outputs = cuda.translate(sentences, beam_size=2, precision=precision)
    assert len(outputs) == len(sentences) and outputs[1] == ""
    if precision == "32":
        assert outputs == cpu


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_training_on_cuda_in_each_precision(
    tmp_path: Path, train_args: Callable[..., list[str]], cell: str, precision: str
) -> None:
    """A few steps on one GPU (cuDNN's RNN kernels in each precision), validated and tested."""
    options = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
    options += ["--trainer.precision", precision, "--model.cell", cell]
    options += ["--trainer.max_steps", "4", "--trainer.limit_val_batches", "1"]
    cli = fit_and_test(train_args(tmp_path, *options, "--trainer.limit_test_batches", "1"))
    assert cli.trainer.state.finished
    assert next(cli.model.parameters()).device.type == "cuda"
    assert torch.isfinite(cli.trainer.callback_metrics["train_loss"])
