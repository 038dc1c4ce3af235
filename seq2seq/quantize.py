"""int8 decoding on CPU: dynamic quantization of the model's GRU, LSTM and Linear layers.

`quantize_int8` replaces the encoder's and the decoder's GRU/LSTM, the decoder's output
layers and the attention's projections with PyTorch's dynamically quantized modules
(`torch.ao.quantization.quantize_dynamic`: int8 weights, activations quantized per
call over the whole batch, fbgemm or oneDNN kernels). The activations' scale is the
batch's: a sentence's output may change with the sentences it is batched with, as
with any dynamic int8 decoder (float32 decoding does not). The tanh RNN has no
quantized kernel and stays in float32; so do the embeddings and the attention's scores.

Where the CPU or the build has no int8 kernels (fbgemm needs AVX2; the probe runs a
tiny quantized layer once), the model stays in float32 with one warning.
`torch.ao.quantization` is deprecated in favour of torchao, which quantizes no GRU or
LSTM; its warnings are silenced here.
"""

import functools
import logging
import warnings
from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn
from torch.ao.quantization import quantize_dynamic

from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq

log = logging.getLogger(__name__)

Quantize = Literal["none", "int8"]
INT8_RNNS = ("GRU", "LSTM")


@functools.cache
def int8_supported() -> bool:
    """Whether this CPU and build run dynamically quantized Linear and GRU layers: a tiny
    one of each tried once."""
    model = nn.ModuleDict({"linear": nn.Linear(4, 4), "rnn": nn.GRU(4, 4, batch_first=True)})
    try:
        quantized = _quantized(model, {"linear", "rnn"})
        with torch.no_grad():
            quantized["linear"](torch.zeros(1, 4))
            quantized["rnn"](torch.zeros(1, 2, 4))
    except (RuntimeError, AssertionError):
        return False
    return True


def quantizable_layers(model: Seq2Seq) -> list[str]:
    """The names of `model`'s layers that int8 can run: its GRU or LSTM layers, the
    decoder's output layers and the attention's projections."""
    names = [
        f"{part}.rnn" for part in ("encoder", "decoder") if _rnn_mode(model, part) in INT8_RNNS
    ]
    names += ["decoder.bridge", "decoder.pre_output", "decoder.output"]
    attention = model.decoder.attention
    names += [f"decoder.attention.{n}" for n in ("key_proj", "query_proj") if hasattr(attention, n)]
    return names


def _rnn_mode(model: Seq2Seq, part: str) -> str:
    return getattr(model, part).rnn.mode


def quantize_int8(model: Seq2Seq, device: torch.device) -> Seq2Seq:
    """`model` (in eval mode) with the layers of `quantizable_layers` in int8, one log line
    naming them; unchanged, with one warning, where `int8_supported` is false. CPU only:
    UserError on another device."""
    if device.type != "cpu":
        raise UserError(f"int8 quantization runs on CPU only, not on {device}: use --device cpu")
    if not int8_supported():
        _say_int8_unsupported()
        return model
    names = quantizable_layers(model)
    quantized = _quantized(model.eval(), set(names))
    log.info("int8: %s; float32: the rest", ", ".join(names))
    return quantized


def int8_linear(weight: Tensor, bias: Tensor) -> Callable[[Tensor], Tensor]:
    """(N, F) -> (N, O) as a dynamically quantized Linear layer with (O, F) int8 `weight`
    (rows of such a layer's `_weight_bias()`) and (O,) `bias` computes it."""
    packed = torch.ops.quantized.linear_prepack(weight, bias)
    return partial(torch.ops.quantized.linear_dynamic, W_prepack=packed, reduce_range=True)


def _quantized(model: nn.Module, names: set[str]) -> nn.Module:
    """`quantize_dynamic` of the named submodules to int8 weights, its deprecation quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        return quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)


@functools.cache
def _say_int8_unsupported() -> None:
    log.warning(
        "this CPU or PyTorch build has no int8 kernels (fbgemm needs AVX2): decoding in float32"
    )
