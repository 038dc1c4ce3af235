"""Recurrent encoder over packed source sequences.

Shapes: B batch, S source length, E embedding size, H hidden size per
direction, D = H * directions, L layers.
"""

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Cell = Literal["gru", "lstm", "rnn"]

RNN_TYPES: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}


def make_rnn(
    cell: Cell,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    *,
    dropout: float,
    bidirectional: bool = False,
) -> nn.RNNBase:
    """A batch-first `nn.GRU`, `nn.LSTM` or tanh `nn.RNN` (dropout only between layers)."""
    if cell not in RNN_TYPES:
        raise ValueError(f"cell must be one of {sorted(RNN_TYPES)}, got {cell!r}")
    return RNN_TYPES[cell](
        input_size,
        hidden_size,
        num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


class Encoder(nn.Module):
    """Embeds the source and runs a (bidirectional) RNN over it, skipping padding."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_size: int,
        *,
        num_layers: int,
        cell: Cell,
        bidirectional: bool,
        dropout: float,
        pad_id: int,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.rnn = make_rnn(
            cell, embed_dim, hidden_size, num_layers, dropout=dropout, bidirectional=bidirectional
        )
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.directions

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode a padded batch.

        Args:
            src: (B, S) token ids, padded on the right.
            src_lengths: (B,) true lengths, each at least 1.

        Returns:
            states: (B, S, D) top-layer outputs, zero at padding.
            summary: (B, D) final states of the top layer, directions concatenated.
        """
        embedded = self.dropout(self.embed(src))  # (B, S, E)
        packed = pack_padded_sequence(
            embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, final = self.rnn(packed)
        states, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
        hidden = final[0] if isinstance(final, tuple) else final  # (L * dirs, B, H)
        top = hidden[-self.directions :]  # (dirs, B, H)
        summary = top.transpose(0, 1).reshape(src.size(0), self.output_size)  # (B, D)
        return self.dropout(states), summary


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, max_len) bool mask, True at positions before each length."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)
