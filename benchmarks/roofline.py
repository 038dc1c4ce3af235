"""The hardware side of a roofline: FLOPs counted in a run, and the fp32 GEMM rate they
are measured against.

`counting()` counts the FLOPs of what runs under it (`FlopCounterMode`, with oneDNN's
CPU LSTM layer added) and records its largest matrix product; `gemm_flops` times a
matmul of a given shape. The attainable rate is the better of a 2048³ matmul and the
run's own largest GEMM, both timed on the same threads in the same run.
"""

import math
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

SQUARE = (2048, 2048, 2048)


class LargestGemm(TorchDispatchMode):
    """The (m, k, n) of the largest matrix product (`aten.mm`, `aten.addmm`) run under it.

    Composite ops that reach it whole (`aten.linear` and `aten.gru` under inference mode)
    are decomposed, as FlopCounterMode does, so that their matrix products are seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shape = (0, 0, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            a, b = args[-2], args[-1]  # mm(a, b); addmm(bias, a, b)
            shape = (a.shape[0], a.shape[1], b.shape[1])
            if math.prod(shape) > math.prod(self.shape):
                self.shape = shape
        else:
            with self:
                decomposed = func.decompose(*args, **(kwargs or {}))
            if decomposed is not NotImplemented:
                return decomposed
        return func(*args, **(kwargs or {}))


def _onednn_rnn_flops(input_shape, w_ih_shape, w_hh_shape, *args, **kwargs) -> int:
    """FLOPs of `aten.mkldnn_rnn_layer`, PyTorch's CPU LSTM layer (oneDNN), which
    FlopCounterMode does not know: both projections of every step, 2 per multiply-add."""
    steps, batch = input_shape[0], input_shape[1]  # (S, B, I)
    return 2 * steps * batch * w_ih_shape[0] * (w_ih_shape[1] + w_hh_shape[1])


ONEDNN_RNN_FLOPS = {
    torch.ops.aten.mkldnn_rnn_layer: _onednn_rnn_flops,
    # the backward: gradients of the inputs and of the weights, twice the forward
    torch.ops.aten.mkldnn_rnn_layer_backward: lambda *a, **k: 2 * _onednn_rnn_flops(*a, **k),
}


@contextmanager
def counting() -> Iterator[tuple[FlopCounterMode, LargestGemm]]:
    """Count FLOPs (`.get_total_flops()`) and the largest GEMM (`.shape`) of the block."""
    gemms = LargestGemm()
    with FlopCounterMode(display=False, custom_mapping=ONEDNN_RNN_FLOPS) as counter, gemms:
        yield counter, gemms


def gemm_flops(threads: int, m: int, k: int, n: int, repeats: int = 15) -> float:
    """Median FLOP/s of an fp32 (m × k) @ (k × n) matmul on `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times)
