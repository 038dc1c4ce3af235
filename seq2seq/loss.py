"""Label-smoothed cross-entropy over a large vocabulary, in one pass each way.

Shapes: N target tokens (batch × length, padding included), V vocabulary.

With smoothing ε, the target distribution of a token is q = (1 - ε)·onehot(y) + ε/V
(as `torch.nn.functional.cross_entropy(label_smoothing=ε)`), and its loss is
-Σ_v q_v log p_v = (1 - ε)·nll + ε·mean_v(-log p_v). The gradient with respect to the
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
        ctx: FunctionCtx, logits: Tensor, targets: Tensor, smoothing: float, pad_id: int
    ) -> tuple[Tensor, Tensor]:
        log_probs = torch.log_softmax(logits.float(), dim=1)  # (N, V)
        real = targets != pad_id  # (N,)
        nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)  # (N,)
        uniform = -log_probs.mean(dim=1)  # (N,) cross-entropy against ε/V everywhere
        smoothed = (1 - smoothing) * nll + smoothing * uniform  # (N,)
        ctx.save_for_backward(log_probs, targets, real)
        ctx.smoothing, ctx.logits_dtype = smoothing, logits.dtype
        zero = smoothed.new_zeros(())
        return torch.where(real, smoothed, zero).sum(), torch.where(real, nll, zero).sum()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_smoothed: Tensor, grad_nll: Tensor
    ) -> tuple[Tensor, None, None, None]:
        log_probs, targets, real = ctx.saved_tensors
        eps, vocab = ctx.smoothing, log_probs.size(1)
        # gs·(p - q) + gn·(p - onehot(y)) at non-pad rows:
        # (gs + gn)·p - gs·ε/V - (gs·(1 - ε) + gn)·onehot(y)
        real = real.to(log_probs.dtype).unsqueeze(1)  # (N, 1)
        # (N, V) p, in the saved buffer: a second backward (retain_graph) fails autograd's
        # version check instead of reading it
        grad = log_probs.exp_()
        grad.mul_((grad_smoothed + grad_nll) * real).sub_(grad_smoothed * eps / vocab * real)
        at_target = -(grad_smoothed * (1 - eps) + grad_nll) * real  # (N, 1)
        grad.scatter_add_(1, targets.unsqueeze(1), at_target)
        return grad.to(ctx.logits_dtype), None, None, None


def smoothed_cross_entropy(
    logits: Tensor, targets: Tensor, *, smoothing: float, pad_id: int
) -> tuple[Tensor, Tensor]:
    """(N, V) logits and (N,) targets -> (summed label-smoothed loss, summed NLL), both over
    the tokens that are not `pad_id`; equal to `cross_entropy(..., reduction="sum")` with
    and without `label_smoothing`, gradients included."""
    return _SmoothedCrossEntropy.apply(logits, targets, smoothing, pad_id)
