"""The fused label-smoothed loss against PyTorch's cross_entropy, values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from seq2seq.loss import projected_cross_entropy, smoothed_cross_entropy

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


def explicit_reference(
    logits: Tensor, targets: Tensor, smoothing: float, unsmoothed: list[int]
) -> Tensor:
    """Summed -Σ_v q_v log p_v with q written out: 1 - ε on the target, ε spread evenly over
    the ids not in `unsmoothed`; padding rows left out (float64)."""
    vocab = logits.size(1)
    kept = torch.ones(vocab, dtype=torch.float64)
    kept[unsmoothed] = 0
    q = smoothing * kept / kept.sum() + (1 - smoothing) * F.one_hot(targets, vocab)
    per_row = -(q * torch.log_softmax(logits.double(), dim=1)).sum(dim=1)
    return per_row[targets != PAD].sum()


@pytest.mark.parametrize("smoothing", [0.1, 0.4])
def test_smoothing_leaves_out_the_ids_search_never_emits(smoothing: float) -> None:
    gen = torch.Generator().manual_seed(1)
    logits = (2 * torch.randn(10, 9, generator=gen)).double()
    targets = torch.randint(2, 9, (10,), generator=gen)
    targets[3] = PAD
    unsmoothed = [PAD, 1]  # pad and BOS
    ours_x = logits.clone().requires_grad_()
    ours, _ = smoothed_cross_entropy(
        ours_x, targets, smoothing=smoothing, pad_id=PAD, unsmoothed_ids=tuple(unsmoothed)
    )
    ours.backward()
    ref_x = logits.clone().requires_grad_()
    ref = explicit_reference(ref_x, targets, smoothing, unsmoothed)
    ref.backward()
    torch.testing.assert_close(ours.double(), ref.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-6, atol=1e-6)
    all_smoothed = explicit_reference(logits, targets, smoothing, [])
    assert not torch.isclose(ref, all_smoothed)  # leaving them out changes the loss


@pytest.mark.parametrize("chunk", [5, 12, 64])
def test_projected_equals_the_loss_of_the_logits(chunk: int) -> None:
    """Chunked, with the gradients computed in the forward pass: the same sums, and the same
    gradients with respect to the outputs, the weight and the bias, as autograd through
    `hidden @ weight.T + bias` and smoothed_cross_entropy (both in float32 inside)."""
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    bias = torch.randn(9, generator=gen, dtype=torch.float64)
    targets = torch.randint(2, 9, (12,), generator=gen)
    targets[[0, 7]] = PAD
    options = {"smoothing": 0.2, "pad_id": PAD, "unsmoothed_ids": (PAD, 1)}
    upstream = (0.7, -1.3)

    ours_inputs = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    ours = projected_cross_entropy(*ours_inputs, targets, chunk=chunk, **options)
    (upstream[0] * ours[0] + upstream[1] * ours[1]).backward()
    ref_inputs = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    ref_h, ref_w, ref_b = ref_inputs
    ref = smoothed_cross_entropy(ref_h @ ref_w.T + ref_b, targets, **options)
    (upstream[0] * ref[0] + upstream[1] * ref[1]).backward()

    for got, expected in zip(ours, ref, strict=True):
        torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)
    for got, expected in zip(ours_inputs, ref_inputs, strict=True):
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-5, atol=1e-5)
    assert (ours_inputs[0].grad[[0, 7]] == 0).all()  # padding rows get no gradient
    with torch.no_grad():  # evaluation: the sums alone
        torch.testing.assert_close(
            projected_cross_entropy(hidden, weight, bias, targets, chunk=chunk, **options)[1],
            ours[1].detach(),
        )


def test_projected_under_bf16_autocast_follows_the_logits_path() -> None:
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(40, 16, generator=gen)
    linear = torch.nn.Linear(16, 30)
    targets = torch.randint(1, 30, (40,), generator=gen)
    options = {"smoothing": 0.1, "pad_id": PAD}
    grads = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = projected_cross_entropy(
            hidden, linear.weight, linear.bias, targets, chunk=16, **options
        )
        ours[0].backward()
        grads.append(linear.weight.grad.clone())
        linear.weight.grad = None
        ref = smoothed_cross_entropy(linear(hidden), targets, **options)
        ref[0].backward()
        grads.append(linear.weight.grad)
    assert ours[0].dtype == torch.float32 and grads[0].dtype == torch.float32
    torch.testing.assert_close(ours[0], ref[0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grads[0], grads[1], rtol=5e-2, atol=5e-3)


def test_projected_with_no_real_token_is_zero_with_zero_gradients() -> None:
    """A batch of padding alone: nothing is projected; the sums and every gradient are 0."""
    hidden = torch.randn(4, 6, requires_grad=True)
    linear = torch.nn.Linear(6, 9)
    targets = torch.full((4,), PAD)
    smoothed, nll = projected_cross_entropy(
        hidden, linear.weight, linear.bias, targets, smoothing=0.1, pad_id=PAD
    )
    (smoothed + nll).backward()
    assert smoothed.item() == 0 and nll.item() == 0
    for grad in (hidden.grad, linear.weight.grad, linear.bias.grad):
        assert grad is not None and not grad.any()


@pytest.mark.parametrize("no_grad", [torch.no_grad, torch.inference_mode])
def test_projected_without_grad_mode_costs_the_logits_gemm_alone(no_grad) -> None:
    """Validation and test run without grad mode, on parameters that require gradients:
    the sums are those of training, and the only GEMM is the logits' (M, H+1) @ (H+1, V),
    none of the gradients' (p·W, pᵀ·h)."""
    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(30, 8, generator=gen)
    linear = torch.nn.Linear(8, 50)
    targets = torch.randint(1, 50, (30,), generator=gen)
    targets[[1, 4]] = PAD
    args = (hidden, linear.weight, linear.bias, targets)
    options = {"smoothing": 0.1, "pad_id": PAD, "unsmoothed_ids": (PAD, 1), "chunk": 8}
    with_grad = projected_cross_entropy(*args, **options)
    with no_grad(), FlopCounterMode(display=False) as flops:
        without_grad = projected_cross_entropy(*args, **options)
    real = int((targets != PAD).sum())
    assert flops.get_total_flops() == 2 * real * (8 + 1) * 50
    assert without_grad[0].grad_fn is None
    for got, expected in zip(without_grad, with_grad, strict=True):
        assert torch.equal(got, expected.detach())
