"""Label-smoothed cross-entropy over a large vocabulary, in one pass each way.

Shapes: N target tokens (batch × length, padding included), V vocabulary.

With smoothing ε, the target distribution of a token is q = (1 - ε)·onehot(y) + ε/K on
the K ids that get smoothing mass (all V, as `torch.nn.functional.cross_entropy(
label_smoothing=ε)`, unless some are left out), and its loss is -Σ_v q_v log p_v =
(1 - ε)·nll + ε·mean over those K of (-log p_v). The gradient with respect to the
logits is p - q. Computing it directly needs one (N, V) log-softmax forward and one
exp backward, where autograd through `cross_entropy` keeps several (N, V) temporaries
(log-softmax, its backward, the smoothing term's gradient), each a pass over N×V
floats.
"""

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable


class _SmoothedCrossEntropy(torch.autograd.Function):
    """(N, V) logits, (N,) targets -> summed smoothed loss and summed NLL over non-pad tokens."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: Tensor,
        targets: Tensor,
        smoothing: float,
        pad_id: int,
        excluded: Tensor,
    ) -> tuple[Tensor, Tensor]:
        log_probs = torch.log_softmax(logits.float(), dim=1)  # (N, V)
        real = targets != pad_id  # (N,)
        nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)  # (N,)
        kept = log_probs.size(1) - excluded.numel()  # ids that get smoothing mass
        summed = log_probs.sum(dim=1) - log_probs.index_select(1, excluded).sum(dim=1)  # (N,)
        uniform = -summed / kept  # (N,) cross-entropy against ε/K on the K kept ids
        smoothed = (1 - smoothing) * nll + smoothing * uniform  # (N,)
        ctx.save_for_backward(log_probs, targets, real, excluded)
        ctx.smoothing, ctx.kept, ctx.logits_dtype = smoothing, kept, logits.dtype
        zero = smoothed.new_zeros(())
        return torch.where(real, smoothed, zero).sum(), torch.where(real, nll, zero).sum()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_smoothed: Tensor, grad_nll: Tensor
    ) -> tuple[Tensor, None, None, None, None]:
        log_probs, targets, real, excluded = ctx.saved_tensors
        eps, kept = ctx.smoothing, ctx.kept
        # gs·(p - q) + gn·(p - onehot(y)) at non-pad rows, q = ε/K on kept ids:
        # (gs + gn)·p - gs·ε/K·kept - (gs·(1 - ε) + gn)·onehot(y)
        real = real.to(log_probs.dtype).unsqueeze(1)  # (N, 1)
        # (N, V) p, in the saved buffer: a second backward (retain_graph) fails autograd's
        # version check instead of reading it
        grad = log_probs.exp_()
        uniform = grad_smoothed * eps / kept * real  # (N, 1)
        grad.mul_((grad_smoothed + grad_nll) * real).sub_(uniform)
        grad.index_add_(1, excluded, uniform.expand(-1, excluded.numel()))  # no mass there
        at_target = -(grad_smoothed * (1 - eps) + grad_nll) * real  # (N, 1)
        grad.scatter_add_(1, targets.unsqueeze(1), at_target)
        return grad.to(ctx.logits_dtype), None, None, None, None


def smoothed_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    *,
    smoothing: float,
    pad_id: int,
    unsmoothed_ids: tuple[int, ...] = (),
) -> tuple[Tensor, Tensor]:
    """(N, V) logits and (N,) targets -> (summed label-smoothed loss, summed NLL), both over
    the tokens that are not `pad_id`, gradients included.

    The smoothed target puts 1 - ε on the true token and spreads ε evenly over the
    vocabulary but `unsmoothed_ids` (pad and BOS in training: ids that search never
    emits), as JoeyNMT and OpenNMT-py leave out padding. Without them, this equals
    `cross_entropy(..., reduction="sum")` with and without `label_smoothing`.
    """
    excluded = torch.tensor(sorted(set(unsmoothed_ids)), dtype=torch.long, device=logits.device)
    return _SmoothedCrossEntropy.apply(logits, targets, smoothing, pad_id, excluded)
