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

`projected_cross_entropy` goes one step further for training: it takes the decoder's
outputs and the output projection instead of the logits, and computes the loss of the
non-pad rows a chunk at a time, with each chunk's share of the gradients (the same GEMMs
that the projection's backward would run), so that the (N, V) logits never exist at once.
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
        smoothed, nll = _row_losses(log_probs, targets, smoothing, excluded)
        zero = smoothed.new_zeros(())
        smoothed, nll = torch.where(real, smoothed, zero), torch.where(real, nll, zero)
        ctx.save_for_backward(log_probs, targets, real, excluded)
        ctx.smoothing, ctx.kept = smoothing, _kept(logits.size(1), excluded)
        ctx.logits_dtype = logits.dtype
        return smoothed.sum(), nll.sum()

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


class _ProjectedCrossEntropy(torch.autograd.Function):
    """(N, H) outputs, (V, H) weight, (V,) bias, (N,) targets -> summed smoothed loss and
    summed NLL over non-pad tokens, `chunk` rows of logits at a time (`_chunked_losses`),
    with the terms of the gradients that backward needs. Only the M non-pad rows are
    projected."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor,
        targets: Tensor,
        smoothing: float,
        pad_id: int,
        excluded: Tensor,
        chunk: int,
    ) -> tuple[Tensor, Tensor]:
        real, real_hidden, real_targets = _real_rows(hidden, targets, pad_id)
        needs_grad = any(ctx.needs_input_grad[:3])
        smoothed_sum, nll_sum, terms = _chunked_losses(
            real_hidden, weight, bias, real_targets, smoothing, excluded, chunk, needs_grad
        )
        if terms is not None:
            ctx.save_for_backward(real, real_hidden, weight, real_targets, excluded)
            ctx.rows, ctx.hidden_dtype = hidden.size(0), hidden.dtype
            ctx.hidden_part, ctx.weight_part, ctx.bias_part = terms
            ctx.smoothing, ctx.kept = smoothing, _kept(weight.size(0), excluded)
        return smoothed_sum, nll_sum

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_smoothed: Tensor, grad_nll: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, None, None, None, None, None]:
        real, real_hidden, weight, targets, excluded = ctx.saved_tensors
        # d(loss)/d(logits) = gs·(p - q) + gn·(p - onehot(y)) at real rows (q as above)
        # = (gs + gn)·p - gs·ε/K on the kept ids - (gs·(1 - ε) + gn)·onehot(y); each term
        # times W for hidden's gradient, times h for weight's, summed over rows for bias's.
        at_probs = grad_smoothed + grad_nll
        at_kept = grad_smoothed * ctx.smoothing / ctx.kept
        at_target = grad_smoothed * (1 - ctx.smoothing) + grad_nll
        kept = torch.ones_like(ctx.bias_part)  # (V,)
        kept[excluded] = 0
        real_hidden = real_hidden.float()  # (M, H)
        weight32 = weight.float()
        grad_real = at_probs * ctx.hidden_part.float() - (
            at_kept * (kept @ weight32) + at_target * weight32[targets]
        )  # (M, H)
        grad_hidden = grad_real.new_zeros(ctx.rows, weight.size(1)).index_copy_(0, real, grad_real)
        at_targets = torch.zeros_like(ctx.weight_part).index_add_(0, targets, real_hidden)
        grad_weight = (
            at_probs * ctx.weight_part
            - at_kept * kept.unsqueeze(1) * real_hidden.sum(dim=0)
            - at_target * at_targets
        )  # (V, H)
        target_counts = torch.bincount(targets, minlength=kept.numel()).to(kept)  # (V,)
        grad_bias = (
            at_probs * ctx.bias_part - at_kept * kept * real.numel() - at_target * target_counts
        )
        grads = grad_hidden.to(ctx.hidden_dtype), grad_weight.to(weight.dtype)
        return *grads, grad_bias.to(weight.dtype), None, None, None, None, None


def _real_rows(hidden: Tensor, targets: Tensor, pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(N, H) outputs, (N,) targets -> (M,) indices of the non-pad rows, their (M, H)
    outputs and (M,) targets."""
    real = (targets != pad_id).nonzero().squeeze(1)  # (M,)
    return real, hidden.index_select(0, real), targets.index_select(0, real)


def _chunked_losses(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor,
    targets: Tensor,
    smoothing: float,
    excluded: Tensor,
    chunk: int,
    with_gradients: bool,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor] | None]:
    """(M, H) non-pad outputs, (M,) targets -> summed smoothed loss, summed NLL and, if
    `with_gradients`, the probabilities' terms of the gradients ((M, H) p·W for hidden's,
    (V, H) Σ_rows p·h for weight's, (V,) Σ_rows p for bias's), else None.

    `chunk` rows of logits at a time. The bias rides in the GEMM as an extra input column
    of ones ((M, H+1) @ (H+1, V)), which spares addmm's pass that copies it into every row
    of the logits first.
    """
    with_ones = torch.cat([hidden, hidden.new_ones(hidden.size(0), 1)], dim=1)  # (M, H+1)
    projection = torch.cat([weight, bias.unsqueeze(1)], dim=1).t()  # (H+1, V)
    if with_gradients:
        hidden_part = [hidden.new_zeros(0, hidden.size(1))]  # (n, H) each
        weight_part = torch.zeros(weight.shape, device=weight.device)  # (V, H)
        bias_part = torch.zeros(bias.shape, device=bias.device)  # (V,)
    smoothed_sum = nll_sum = torch.zeros((), device=hidden.device)
    for start in range(0, hidden.size(0), chunk):
        rows = slice(start, start + chunk)
        logits = with_ones[rows] @ projection  # (n, V)
        log_probs = torch.log_softmax(logits.float(), dim=1)  # (n, V)
        del logits
        smoothed, nll = _row_losses(log_probs, targets[rows], smoothing, excluded)
        smoothed_sum, nll_sum = smoothed_sum + smoothed.sum(), nll_sum + nll.sum()
        if with_gradients:
            probs = log_probs.exp_()  # (n, V)
            hidden_part.append(probs.to(weight.dtype) @ weight)
            weight_part.add_(probs.t().to(hidden.dtype) @ hidden[rows])
            bias_part.add_(probs.sum(dim=0))
    if not with_gradients:
        return smoothed_sum, nll_sum, None
    return smoothed_sum, nll_sum, (torch.cat(hidden_part), weight_part, bias_part)


def _row_losses(
    log_probs: Tensor, targets: Tensor, smoothing: float, excluded: Tensor
) -> tuple[Tensor, Tensor]:
    """(n, V) log-probabilities -> (n,) smoothed loss and (n,) NLL."""
    nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)  # (n,)
    summed = log_probs.sum(dim=1) - log_probs.index_select(1, excluded).sum(dim=1)  # (n,)
    # (n,) cross-entropy against ε/K on the kept ids
    uniform = -summed / _kept(log_probs.size(1), excluded)
    return (1 - smoothing) * nll + smoothing * uniform, nll


def _kept(vocab_size: int, excluded: Tensor) -> int:
    """How many ids get smoothing mass."""
    return vocab_size - excluded.numel()


def _excluded_ids(unsmoothed_ids: tuple[int, ...], device: torch.device) -> Tensor:
    """The ids that get no smoothing mass, as a sorted (K',) long tensor."""
    return torch.tensor(sorted(set(unsmoothed_ids)), dtype=torch.long, device=device)


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
    excluded = _excluded_ids(unsmoothed_ids, logits.device)
    return _SmoothedCrossEntropy.apply(logits, targets, smoothing, pad_id, excluded)


def projected_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor,
    targets: Tensor,
    *,
    smoothing: float,
    pad_id: int,
    unsmoothed_ids: tuple[int, ...] = (),
    chunk: int = 256,
) -> tuple[Tensor, Tensor]:
    """`smoothed_cross_entropy` of the logits `hidden @ weight.T + bias` ((N, H), (V, H),
    (V,)) without holding them: `chunk` rows of (chunk, V) logits at a time, gradients
    with respect to `hidden`, `weight` and `bias` included.

    Under `torch.no_grad()` or inference mode (validation, test), the sums alone: no
    gradient work, nothing kept for backward."""
    excluded = _excluded_ids(unsmoothed_ids, hidden.device)
    if not torch.is_grad_enabled():
        _, real_hidden, real_targets = _real_rows(hidden, targets, pad_id)
        smoothed_sum, nll_sum, _ = _chunked_losses(
            real_hidden, weight, bias, real_targets, smoothing, excluded, chunk, False
        )
        return smoothed_sum, nll_sum
    return _ProjectedCrossEntropy.apply(
        hidden, weight, bias, targets, smoothing, pad_id, excluded, chunk
    )
