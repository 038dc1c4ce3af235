"""benchmarks/roofline.py: the FLOPs and the largest GEMM it records, in training and in
inference mode (where composite ops such as `linear` and `gru` reach it whole)."""

from collections.abc import Callable
from types import ModuleType

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def roofline(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("roofline")


@pytest.mark.parametrize("inference", [False, True])
def test_counts_a_linear_and_a_gru_step_by_hand(roofline: ModuleType, inference: bool) -> None:
    torch.manual_seed(0)
    linear, gru = nn.Linear(4, 6), nn.GRU(4, 5, batch_first=True)
    x = torch.randn(3, 4)
    with torch.inference_mode(inference), roofline.counting() as (counter, gemms):
        out = linear(x)
        gru(x.unsqueeze(1))  # one step of 3 rows
    assert torch.equal(out, x @ linear.weight.T + linear.bias)  # decomposing kept the result
    gru_flops = 2 * 3 * 4 * 15 + 2 * 3 * 5 * 15  # input and hidden projections, 3 gates of 5
    assert counter.get_total_flops() == 2 * 3 * 4 * 6 + gru_flops
    assert gemms.shape == (3, 5, 15)  # the GRU's hidden projection: 3 x 5 @ 5 x 15
