"""The fused label-smoothed loss against PyTorch's cross_entropy, values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from seq2seq.loss import smoothed_cross_entropy

PAD = 0


def reference(logits: Tensor, targets: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
    """Summed smoothed loss and summed NLL by PyTorch, in float64."""
    sums = {"ignore_index": PAD, "reduction": "sum"}
    smoothed = F.cross_entropy(logits.double(), targets, label_smoothing=smoothing, **sums)
    return smoothed, F.cross_entropy(logits.double(), targets, **sums)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_equals_cross_entropy_with_and_without_smoothing(smoothing: float, dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(12, 7, generator=gen)).to(dtype)
    targets = torch.randint(0, 7, (12,), generator=gen)
    targets[[2, 5]] = PAD  # padding rows count for nothing
    upstream = (0.7, -1.3)  # gradients flowing into the two sums

    ours_x = logits.clone().requires_grad_()
    ours = smoothed_cross_entropy(ours_x, targets, smoothing=smoothing, pad_id=PAD)
    (upstream[0] * ours[0] + upstream[1] * ours[1]).backward()
    ref_x = logits.double().requires_grad_()
    ref = reference(ref_x, targets, smoothing)
    (upstream[0] * ref[0] + upstream[1] * ref[1]).backward()

    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(ours[0].double(), ref[0].detach(), **tol)
    torch.testing.assert_close(ours[1].double(), ref[1].detach(), **tol)
    assert ours_x.grad.dtype == dtype
    torch.testing.assert_close(ours_x.grad.double(), ref_x.grad, **tol)
    assert (ours_x.grad[[2, 5]] == 0).all()
