"""Bahdanau (additive) attention, with keys projected once per sentence.

Shapes: B batch, S source length, D memory size, Q query size, A attention size.
"""

import torch
from torch import Tensor, nn


class BahdanauAttention(nn.Module):
    """score(q, k_j) = v^T tanh(W_q q + W_k k_j), softmax over unmasked source positions."""

    def __init__(self, query_size: int, memory_size: int, attention_size: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(memory_size, attention_size, bias=False)
        self.query_proj = nn.Linear(query_size, attention_size, bias=True)
        self.energy = nn.Linear(attention_size, 1, bias=False)

    def project_keys(self, memory: Tensor) -> Tensor:
        """(B, S, D) encoder states -> (B, S, A) keys; done once per sentence, not per step."""
        return self.key_proj(memory)

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Attend from one decoder state, or from K states per sentence (beam search).

        Args:
            query: (B*K, Q) decoder states, K consecutive rows per sentence.
            keys: (B, S, A) projected keys.
            values: (B, S, D) encoder states.
            mask: (B, S) True at real source tokens (at least one per row).

        Returns:
            context: (B*K, D) weighted sums of values.
            weights: (B*K, S) attention distributions, zero at padding.
        """
        batch, length, _ = keys.shape
        query = self.query_proj(query).view(batch, -1, keys.size(2))  # (B, K, A)
        scores = self._scores(keys.unsqueeze(1) + query.unsqueeze(2))  # (B, K, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=2)  # (B, K, S)
        context = torch.bmm(weights, values)  # (B, K, D)
        return context.view(-1, values.size(2)), weights.view(-1, length)

    def _scores(self, hidden: Tensor) -> Tensor:
        """v^T tanh(hidden): (..., A) -> (...). When decoding on CPU, as 2 v^T sigmoid(2 hidden)
        - sum(v), computed in place.

        PyTorch's CPU sigmoid is cheaper than its tanh, and this is the largest elementwise
        op of a decoding step (benchmarks/README.md has the timings); the identity
        tanh(x) = 2 sigmoid(2x) - 1 moves its outer scaling onto the (...) scores.
        The two differ by under 1e-6. Training keeps tanh: its backward pass is cheaper.
        """
        if hidden.requires_grad or hidden.device.type != "cpu":
            return self.energy(torch.tanh(hidden)).squeeze(-1)
        scores = self.energy(hidden.mul_(2).sigmoid_()).squeeze(-1)
        return scores.mul_(2).sub_(self.energy.weight.sum())
