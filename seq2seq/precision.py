"""The CPU's floating point, probed: which recurrent layers may run in bfloat16 under CPU
autocast, and whether denormal floats can be flushed to zero.

oneDNN runs an LSTM in bfloat16 only on CPUs with AVX-512 (BF16) or AMX; elsewhere
`nn.LSTM` under `torch.autocast("cpu", torch.bfloat16)` raises "could not create a
primitive descriptor". GRU and tanh RNN layers stay in float32 under CPU autocast
anyway. Where the probe fails, LSTM layers run in float32 inside autocast, and the
rest of the model stays in bfloat16.

A softmax that saturates (Luong's general score after a few updates) leaves probabilities
below float32's smallest normal number, 2**-126; x86 CPUs compute with such denormals
tens of times more slowly. Training flushes them to zero (`flush_denormals`) where the
CPU can, which changes no value above 2**-126. The flag belongs to a thread and the
threads it starts later: `scripts/train.py` sets it before any thread pool starts,
`TranslationModule.on_fit_start` (for other Trainers) on the thread that trains. It
stays set in the process after training.
"""

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

Result = TypeVar("Result")
RnnArg = Tensor | tuple[Tensor, ...]


@functools.cache
def cpu_bf16_lstm_supported() -> bool:
    """Whether this CPU runs an LSTM under bfloat16 autocast: tried once on a tiny LSTM."""
    lstm = nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            lstm(torch.zeros(1, 2, 4))
    except RuntimeError:
        return False
    return True


def needs_fp32(rnn: nn.RNNBase, inputs: Tensor) -> bool:
    """Whether `rnn` must leave CPU bfloat16 autocast to run on `inputs`."""
    return (
        rnn.mode == "LSTM"
        and inputs.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not cpu_bf16_lstm_supported()
    )


def run_rnn(
    rnn: nn.RNNBase, inputs: Tensor, *state: RnnArg, call: Callable[..., Result] | None = None
) -> Result:
    """`rnn(inputs, *state)` (or `call(...)`, a function over `rnn`'s weights), in float32
    outside autocast where `needs_fp32(rnn, inputs)`."""
    call = rnn if call is None else call
    if not needs_fp32(rnn, inputs):
        return call(inputs, *state)
    _say_lstm_fallback()
    with torch.autocast("cpu", enabled=False):
        return call(inputs.float(), *(_to_float(arg) for arg in state))


def _to_float(arg: RnnArg) -> RnnArg:
    return arg.float() if isinstance(arg, Tensor) else tuple(t.float() for t in arg)


@functools.cache
def _say_lstm_fallback() -> None:
    log.warning(
        "this CPU cannot run LSTM layers in bfloat16 (oneDNN needs AVX-512 BF16 or AMX): "
        "they run in float32 inside bf16 autocast"
    )


def flush_denormals() -> bool:
    """Make the CPU arithmetic of this thread, and of the threads it starts later, treat
    denormal floats as zero; whether it could (x86 with SSE3 and AArch64 can; elsewhere
    it says so once and computes with them)."""
    if torch.set_flush_denormal(True):
        return True
    _say_denormals_kept()
    return False


@functools.cache
def _say_denormals_kept() -> None:
    log.warning("this CPU cannot flush denormal floats to zero: it computes with them")
