"""int8 decoding: which layers are quantized, how close they stay to float32, the fallback."""

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from seq2seq import quantize
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq
from seq2seq.quantize import int8_linear, int8_supported, quantizable_layers, quantize_int8
from seq2seq.translator import Translator

CPU = torch.device("cpu")

needs_int8 = pytest.mark.skipif(not int8_supported(), reason="no int8 kernels on this CPU")


def _model(cell: str, attention: str) -> Seq2Seq:
    return Seq2Seq(30, 30, cell=cell, attention=attention, embed_dim=16, hidden_size=16).eval()


def _is_int8(name: str, module: nn.Module) -> bool:
    """A layer swapped for a dynamically quantized one (not its packed weights inside)."""
    return "quantized.dynamic" in type(module).__module__ and ("._" not in name)


@torch.no_grad()
def _decoder_log_probs(model: nn.Module, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(3, B, V) log-probabilities of three decoder steps fed BOS, then tokens 5 and 6."""
    memory, state = model.encode(src, lengths)
    steps = []
    for token in (model.bos_id, 5, 6):
        prev = torch.full((src.size(0),), token)
        outputs, state, _ = model.decode_step(memory, state, prev)
        steps.append(model.log_probs(outputs))
    return torch.stack(steps)


@needs_int8
@pytest.mark.parametrize(
    ("cell", "attention", "expected"),
    [
        (
            "gru",
            "luong",
            {
                "encoder.rnn",
                "decoder.rnn",
                "decoder.attention.key_proj",
                "decoder.attention.query_proj",
            },
        ),
        (
            "lstm",
            "bahdanau",
            {
                "encoder.rnn",
                "decoder.rnn",
                "decoder.attention.key_proj",
                "decoder.attention.query_proj",
            },
        ),
        ("rnn", "none", set()),
    ],
)
def test_gru_lstm_and_linear_layers_run_in_int8_close_to_float32(
    cell: str, attention: str, expected: set[str]
) -> None:
    model = _model(cell, attention)
    src, lengths = torch.randint(4, 30, (3, 7)), torch.tensor([7, 5, 2])
    reference = _decoder_log_probs(model, src, lengths)
    names = expected | {"decoder.bridge", "decoder.pre_output", "decoder.output"}
    assert set(quantizable_layers(model)) == names
    quantized = quantize_int8(model, CPU)
    swapped = {name for name, m in quantized.named_modules() if _is_int8(name, m)}
    assert swapped == names
    found = _decoder_log_probs(quantized, src, lengths)
    assert (found - reference).abs().max() < 0.05  # int8 rounding, not another model
    assert not torch.equal(found, reference)


@needs_int8
def test_int8_rows_of_a_layer_compute_its_own_columns() -> None:
    layer = quantize_int8(_model("gru", "luong"), CPU).decoder.output
    weight, bias = layer._weight_bias()
    rows, x = torch.tensor([3, 17, 29, 4]), torch.randn(6, 16)
    project = int8_linear(weight.index_select(0, rows), bias.index_select(0, rows))
    torch.testing.assert_close(project(x), layer(x)[:, rows])


def test_without_int8_kernels_the_model_stays_float_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(quantize, "int8_supported", lambda: False)
    quantize._say_int8_unsupported.cache_clear()
    model = _model("gru", "luong")
    with caplog.at_level(logging.WARNING):
        same = quantize_int8(model, CPU)
        quantize_int8(model, CPU)
    assert same is model and type(model.decoder.rnn) is nn.GRU
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "this CPU or PyTorch build has no int8 kernels (fbgemm needs AVX2): decoding in float32"
    ]


def test_int8_is_for_cpus() -> None:
    with pytest.raises(UserError, match="int8 quantization runs on CPU only"):
        quantize_int8(_model("gru", "luong"), torch.device("cuda"))


@needs_int8
def test_int8_translator_decodes_as_float_does(trained: Path) -> None:
    """Through the Python API: the trained model's steps in int8, close to float32's."""
    checkpoint = trained / "checkpoints" / "best.ckpt"
    fp32 = Translator.from_checkpoint(checkpoint, "cpu")
    int8 = Translator.from_checkpoint(checkpoint, "cpu", quantize="int8")
    assert "quantized.dynamic" in type(int8.model.decoder.rnn).__module__
    src, lengths = torch.randint(4, 20, (8, 6)), torch.tensor([6, 6, 5, 5, 4, 3, 2, 1])
    found = _decoder_log_probs(int8.model, src, lengths)
    assert (found - _decoder_log_probs(fp32.model, src, lengths)).abs().max() < 0.05


def test_quantize_option_is_checked(trained: Path) -> None:
    with pytest.raises(UserError, match="quantize must be one of"):
        Translator.from_checkpoint(trained / "checkpoints" / "best.ckpt", "cpu", quantize="int4")
