"""Decoding over each sentence's own shortlist of target pieces (seq2seq.shortlist).

`Restricted` wraps a model or an ensemble with the interface search needs
(seq2seq.search), so greedy, beam, n-best and sampling run unchanged, over the batch's
vocabulary: the ids its sentences may use (`vocabulary`, ascending, the special ids
0..EOS always among them so that they keep their places). Search's token i is target id
`vocabulary[i]`; the caller maps the outputs back. At `encode` the output layer's rows
of that vocabulary are taken once a batch (float or int8, seq2seq.quantize); each step
projects onto them only, then normalizes each row over its own sentence's candidates:
a row's log-probabilities do not depend on the other sentences of its batch (the server
batches requests together) beyond float rounding. EOS is always a candidate.

Shapes: B batch, N rows (K per sentence), U the batch's vocabulary, V target vocabulary,
F decoder output size (F_m of ensemble member m).
"""

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.ensemble import Ensemble
from seq2seq.model import Seq2Seq
from seq2seq.quantize import int8_linear
from seq2seq.shortlist import Shortlist


class RestrictedMemory(NamedTuple):
    """The model's memory with the batch's vocabulary and each sentence's part of it."""

    inner: Any  # the model's memory: (B, ...) rows
    banned: Tensor  # (B, U) bool, True outside the sentence's own candidates
    projections: tuple[Callable[[Tensor], Tensor], ...]  # per member: (N, F_m) -> (N, U) logits
    vocab: Tensor  # (U,) target ids, ascending

    def index_select(self, index: Tensor) -> "RestrictedMemory":
        """Pick (or repeat) batch rows; the batch's vocabulary stays."""
        inner, banned = self.inner.index_select(index), self.banned.index_select(0, index)
        return self._replace(inner=inner, banned=banned)


class Restricted(nn.Module):
    """`model` decoding over per-sentence shortlists, in the batch's vocabulary; its
    `decode_step` outputs are the (N, U) log-probabilities themselves, which `log_probs`
    passes on.

    Args:
        model: an encoder-decoder or an ensemble, output layers in float or int8.
        shortlist: the candidates of each source piece, for `model`'s vocabularies.
    """

    def __init__(self, model: Seq2Seq | Ensemble, shortlist: Shortlist) -> None:
        super().__init__()
        self.model = model
        self.members = list(model.models) if isinstance(model, Ensemble) else [model]
        self.shortlist = shortlist
        self.pad_id, self.bos_id, self.eos_id = model.pad_id, model.bos_id, model.eos_id
        self.specials = max(self.pad_id, self.bos_id, self.eos_id) + 1  # ids kept in place
        self.output_weights = [_weight_and_bias(m.decoder.output) for m in self.members]

    def vocabulary(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        """(B, S) source ids, (B,) lengths -> (U,) the target ids searching them works in."""
        return self._vocabulary(self._allowed(src, src_lengths))

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[RestrictedMemory, Any]:
        """(B, S) source ids, (B,) lengths -> the model's memory and state, with the batch's
        vocabulary, each sentence's candidates in it and the output layers' rows for it."""
        memory, state = self.model.encode(src, src_lengths)
        allowed = self._allowed(src, src_lengths)  # (B, V)
        vocab = self._vocabulary(allowed)  # (U,)
        projections = tuple(output_rows(w, b, vocab) for w, b in self.output_weights)
        return RestrictedMemory(memory, ~allowed[:, vocab], projections, vocab), state

    def decode_step(
        self, memory: RestrictedMemory, state: Any, prev_tokens: Tensor
    ) -> tuple[Tensor, Any, Tensor | None]:
        """(N,) previous tokens in the batch's vocabulary, N / B rows per memory row ->
        (N, U) log-probabilities of the next token over each row's candidates, the new
        state, (N, S) attention or None."""
        previous = memory.vocab[prev_tokens]  # (N,) target ids
        outputs, state, weights = self.model.decode_step(memory.inner, state, previous)
        per_row = prev_tokens.size(0) // memory.banned.size(0)
        banned = memory.banned.repeat_interleave(per_row, dim=0) if per_row > 1 else memory.banned
        parts = outputs.split([m.output_size for m in self.members], dim=-1)  # (N, F_m) each
        member_log_probs = [
            torch.log_softmax(project(part).float().masked_fill_(banned, -math.inf), dim=1)
            for project, part in zip(memory.projections, parts, strict=True)
        ]  # (N, U) each
        if isinstance(self.model, Ensemble):
            return self.model.combine(member_log_probs), state, weights
        return member_log_probs[0], state, weights

    def log_probs(self, outputs: Tensor) -> Tensor:
        """(N, U) rows of `decode_step` outputs: already the log-probabilities."""
        return outputs

    def _allowed(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        """(B, V) bool: each sentence's candidates, EOS among them."""
        allowed = self.shortlist.allowed(src, src_lengths)
        allowed[:, self.eos_id] = True
        return allowed

    def _vocabulary(self, allowed: Tensor) -> Tensor:
        """(U,) ascending ids some sentence of (B, V) `allowed` may use, and the specials."""
        union = allowed.any(dim=0)  # (V,)
        union[: self.specials] = True
        return union.nonzero().squeeze(1)


def _weight_and_bias(output: nn.Module) -> tuple[Tensor, Tensor]:
    """The (V, F) weights and (V,) bias of a float `nn.Linear` or an int8 one (unpacked)."""
    if isinstance(output, nn.Linear):
        return output.weight, output.bias
    return output._weight_bias()


def output_rows(weight: Tensor, bias: Tensor, vocab: Tensor) -> Callable[[Tensor], Tensor]:
    """The output layer of (V, F) `weight` (float or int8) and (V,) `bias` restricted to
    the (U,) ids `vocab`: (N, F) -> (N, U) logits."""
    rows, row_bias = weight.index_select(0, vocab), bias.index_select(0, vocab)
    if rows.is_quantized:
        return int8_linear(rows, row_bias)
    return partial(F.linear, weight=rows, bias=row_bias)
