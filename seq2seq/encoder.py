"""Recurrent encoder over padded source sequences, padding skipped.

Shapes: B batch, S source length, E embedding size, H hidden size per
direction, D = H * directions, L layers.
"""

import threading
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.precision import run_rnn

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
        if embedded.device.type == "cpu" and isinstance(self.rnn, nn.RNNBase):
            states, summary = self._unpacked(embedded, src_lengths)
        else:
            states, summary = self._packed(embedded, src_lengths)
        return self.dropout(states), summary

    def _packed(self, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The RNN over a packed sequence (cuDNN on CUDA; an int8 RNN, seq2seq.quantize, on
        CPU): (B, S, E) -> states, summary."""
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, final = self.rnn(packed)
        states, _ = pad_packed_sequence(outputs, batch_first=True, total_length=embedded.size(1))
        hidden = final[0] if isinstance(final, tuple) else final  # (L * dirs, B, H)
        top = hidden[-self.directions :]  # (dirs, B, H)
        return states, top.transpose(0, 1).reshape(embedded.size(0), self.output_size)

    def _unpacked(self, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The same as `_packed`, one layer and direction at a time over padded tensors.

        PyTorch's CPU RNN over a packed sequence slices the input projection of all steps
        once per step, and the backward of each slice fills a zero tensor of the full size:
        O(S^2) memory traffic. Here the forward direction runs over the padded batch as it
        is (padding comes after each sentence), the backward one over each sentence
        reversed in place (padding still after it). tests/test_encoder.py checks this path
        against the packed one.
        """
        batch, length, _ = embedded.shape
        positions = torch.arange(length, device=embedded.device)  # (S,)
        last = (lengths - 1).unsqueeze(1)  # (B, 1)
        reverse = torch.where(positions < lengths.unsqueeze(1), last - positions, positions)
        layer_input = embedded  # (B, S, E) for the first layer
        for layer in range(self.rnn.num_layers):
            outputs = []  # (B, S, H) per direction
            for direction in range(self.directions):
                flip = _gather_time(layer_input, reverse) if direction else layer_input
                run = partial(_run_direction, self.rnn, layer=layer, direction=direction)
                output = run_rnn(self.rnn, flip, call=run)
                outputs.append(_gather_time(output, reverse) if direction else output)
            layer_input = torch.cat(outputs, dim=2)  # (B, S, D)
            if layer + 1 < self.rnn.num_layers:
                layer_input = F.dropout(layer_input, self.rnn.dropout, self.training)
        states = layer_input.masked_fill(~length_mask(lengths, length).unsqueeze(2), 0.0)
        hidden_size = self.rnn.hidden_size
        rows = torch.arange(batch, device=embedded.device)
        summary = [states[rows, lengths - 1, :hidden_size]]  # forward: after the last token
        if self.directions == 2:
            summary.append(states[:, 0, hidden_size:])  # backward: after the first token
        return states, torch.cat(summary, dim=1)


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    """x[b, index[b, t]] for each (b, t): (B, S, F), (B, S) -> (B, S, F)."""
    return x.gather(1, index.unsqueeze(2).expand(-1, -1, x.size(2)))


def _run_direction(rnn: nn.RNNBase, inputs: Tensor, *, layer: int, direction: int) -> Tensor:
    """One layer and direction of `rnn` with its own weights, from a zero state, over
    (B, S, I) inputs taken in order -> (B, S, H) outputs: a one-layer RNN of the same kind
    called with those weights (`torch.func.functional_call`)."""
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if rnn.bias else [])
    weights = {f"{name}_l0": getattr(rnn, f"{name}{suffix}") for name in names}
    single = _one_layer(rnn.mode, inputs.size(2), rnn.hidden_size, rnn.bias)
    return functional_call(single.train(rnn.training), weights, (inputs,))[0]


_templates = threading.local()  # functional_call swaps weights in: one set per thread


def _one_layer(mode: str, input_size: int, hidden_size: int, bias: bool) -> nn.RNNBase:
    """A one-layer, one-direction, batch-first RNN whose weights are always given: made
    on the meta device, so that it draws nothing from the random generator (a resumed
    run makes it at another point than the run it continues)."""
    cache = _templates.__dict__.setdefault("by_shape", {})
    key = (mode, input_size, hidden_size, bias)
    if key not in cache:
        kind = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN}[mode]
        cache[key] = kind(input_size, hidden_size, bias=bias, batch_first=True, device="meta")
    return cache[key]


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, max_len) bool mask, True at positions before each length."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)
