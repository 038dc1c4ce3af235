"""Several models searched as one: at each step their next-token distributions combine.

`Ensemble` has the interface search needs (`encode`, `decode_step`, `log_probs`; see
seq2seq.search), so greedy, beam, n-best, length penalties and constraints work on it
unchanged; `features`, all steps of a given target at once, serves scoring
(seq2seq.scoring). The models may differ in cell, sizes and attention; they must share the
vocabulary, and tell the width of their decoder outputs (`output_size`). Each step runs
every model's decoder once over the same rows: nothing is recomputed, and beam search
still scores only the rows of open beams.

Shapes: N rows, B batch, S source length, T target length, V target vocabulary, F_m
decoder output size of model m.
"""

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from seq2seq.errors import UserError

EnsembleRule = Literal["logprob", "prob"]


class PerModel(tuple):
    """One batch of rows (encoder memory or decoder state) per model."""

    def index_select(self, index: Tensor) -> "PerModel":
        """Pick (or repeat) the same rows in every model's batch."""
        return PerModel(rows.index_select(index) for rows in self)


class Ensemble(nn.Module):
    """Models whose log-probabilities combine at each step.

    Args:
        models: the members, sharing pad, BOS and EOS ids and the target vocabulary; each
            has `output_size`, the width F_m of its `decode_step` outputs.
        rule: "logprob" averages their log-probabilities (a product of experts, the
            default); "prob" takes the log of their mean probability.
    """

    def __init__(self, models: Sequence[nn.Module], rule: EnsembleRule = "logprob") -> None:
        super().__init__()
        if not models:
            raise UserError("an ensemble needs at least one model")
        if rule not in ("logprob", "prob"):
            raise UserError(f"ensemble rule must be logprob or prob, got {rule!r}")
        ids = {(m.pad_id, m.bos_id, m.eos_id) for m in models}
        if len(ids) > 1:
            raise UserError(f"ensemble members differ in pad, BOS, EOS ids: {sorted(ids)}")
        self.models = nn.ModuleList(models)
        self.rule = rule
        self.pad_id, self.bos_id, self.eos_id = ids.pop()
        self.output_sizes = [model.output_size for model in models]  # F_m

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[PerModel, PerModel]:
        """(B, S) source ids, (B,) lengths -> each model's memory and initial state."""
        encoded = [model.encode(src, src_lengths) for model in self.models]
        return PerModel(m for m, _ in encoded), PerModel(s for _, s in encoded)

    def decode_step(
        self, memory: PerModel, state: PerModel, prev_tokens: Tensor
    ) -> tuple[Tensor, PerModel, Tensor | None]:
        """(N,) previous tokens -> (N, sum F_m) the models' outputs side by side, their
        new states, and the first model's (N, S) attention weights (or None)."""
        steps = [
            model.decode_step(mem, st, prev_tokens)
            for model, mem, st in zip(self.models, memory, state, strict=True)
        ]
        outputs = torch.cat([out for out, _, _ in steps], dim=-1)  # (N, sum F_m)
        return outputs, PerModel(st for _, st, _ in steps), steps[0][2]

    def features(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced: (B, S) source, (B,) lengths, (B, T) BOS + target -> (B, T, sum F_m)
        the models' decoder outputs side by side, as `decode_step` gives them step by step."""
        outputs = [model.features(src, src_lengths, tgt_in) for model in self.models]
        return torch.cat(outputs, dim=-1)  # (B, T, sum F_m)

    def log_probs(self, outputs: Tensor) -> Tensor:
        """(N, sum F_m) rows of `decode_step` outputs -> (N, V) combined log-probabilities."""
        parts = outputs.split(self.output_sizes, dim=-1)  # (N, F_m) each
        return self.combine(
            [model.log_probs(part) for model, part in zip(self.models, parts, strict=True)]
        )

    def combine(self, member_log_probs: list[Tensor]) -> Tensor:
        """Each model's (N, V) log-probabilities -> (N, V) theirs combined by the rule."""
        member = torch.stack(member_log_probs)  # (M, N, V)
        if self.rule == "prob":
            return torch.logsumexp(member, dim=0) - math.log(len(self.models))
        return member.mean(dim=0)
