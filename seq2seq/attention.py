"""Global attention over the encoder states, with the scores of Luong et al. (2015):
additive (Bahdanau et al., 2015), general and dot. Keys are projected once per sentence.

Shapes: B batch, K decoder rows per sentence (beam), S source length, D memory size,
Q query size, A attention size.
"""

from typing import Literal

import torch
from torch import Tensor, nn

from seq2seq.errors import UserError

AttentionScore = Literal["additive", "general", "dot"]


class Attention(nn.Module):
    """Softmax over unmasked source positions of score(q, k_j):

    - additive: v^T tanh(W_q q + W_k k_j) (Bahdanau et al.; keys W_k k_j of size A),
    - general: q^T W k_j (keys W k_j of size Q),
    - dot: q^T k_j (needs Q == D).
    """

    def __init__(
        self, score: AttentionScore, query_size: int, memory_size: int, attention_size: int
    ) -> None:
        super().__init__()
        self.score = score
        if score == "additive":
            self.key_proj = nn.Linear(memory_size, attention_size, bias=False)
            self.query_proj = nn.Linear(query_size, attention_size, bias=True)
            self.energy = nn.Linear(attention_size, 1, bias=False)
        elif score == "general":
            self.key_proj = nn.Linear(memory_size, query_size, bias=False)
        elif score != "dot":
            raise UserError(
                f"model.attention_score must be additive, general or dot, got {score!r}"
            )
        elif query_size != memory_size:
            raise UserError(
                f"model.attention_score dot needs the decoder's hidden size ({query_size}) to "
                f"equal the encoder's output size ({memory_size}; twice hidden_size when "
                "bidirectional): use general"
            )

    def project_keys(self, memory: Tensor) -> Tensor:
        """(B, S, D) encoder states -> (B, S, A or Q) keys; once per sentence, not per step."""
        return memory if self.score == "dot" else self.key_proj(memory)

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Attend from one decoder state, or from K states per sentence (beam search).

        Args:
            query: (B*K, Q) decoder states, K consecutive rows per sentence.
            keys: (B, S, A or Q) projected keys.
            values: (B, S, D) encoder states.
            mask: (B, S) True at real source tokens (at least one per row).

        Returns:
            context: (B*K, D) weighted sums of values.
            weights: (B*K, S) attention distributions, zero at padding.
        """
        batch, length, _ = keys.shape
        if self.score == "additive":
            query = self.query_proj(query).view(batch, -1, keys.size(2))  # (B, K, A)
            scores = self._additive(keys.unsqueeze(1) + query.unsqueeze(2))  # (B, K, S)
        else:
            query = query.view(batch, -1, keys.size(2))  # (B, K, Q)
            scores = torch.bmm(query, keys.transpose(1, 2))  # (B, K, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=2)  # (B, K, S)
        context = torch.bmm(weights, values)  # (B, K, D)
        return context.view(-1, values.size(2)), weights.view(-1, length)

    def _additive(self, hidden: Tensor) -> Tensor:
        """v^T tanh(hidden): (..., A) -> (...). When decoding on CPU, as 2 v^T sigmoid(2 hidden)
        - sum(v), computed in place: the identity tanh(x) = 2 sigmoid(2x) - 1 moves the outer
        scaling onto the (...) scores, and the CPU's sigmoid is cheaper than its tanh (the two
        differ by under 1e-6). Training keeps tanh, whose backward pass is cheaper.
        """
        if hidden.requires_grad or hidden.device.type != "cpu":
            return self.energy(torch.tanh(hidden)).squeeze(-1)
        scores = self.energy(hidden.mul_(2).sigmoid_()).squeeze(-1)
        return scores.mul_(2).sub_(self.energy.weight.sum())
