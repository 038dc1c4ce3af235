"""Greedy and beam search over any model with `encode` and `decode_step`.

Shapes: B batch, B' sentences still being searched, K beam, V target vocabulary,
t tokens generated so far.

Both searches are batched: each time step runs one `decode_step` over every live
sentence (and beam), and a sentence leaves the batch as soon as it is done. A
hypothesis never contains padding, BOS or EOS; its score is the sum of the
model's log-probabilities of its tokens, EOS included when it ended in EOS.
"""

import math
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple, Protocol, TypeVar

import torch
from torch import Tensor

R = TypeVar("R", bound="Rows")


class Rows(Protocol):
    """Batched tensors (encoder memory, decoder state) whose batch rows can be picked."""

    def index_select(self: R, index: Tensor) -> R: ...


M = TypeVar("M", bound=Rows)
St = TypeVar("St", bound=Rows)


class Searchable(Protocol[M, St]):
    """What search needs from a model."""

    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[M, St]: ...

    def decode_step(
        self, memory: M, state: St, prev_tokens: Tensor
    ) -> tuple[Tensor, St, Tensor | None]: ...


class Hypothesis(NamedTuple):
    """One output sentence."""

    tokens: list[int]  # without BOS and EOS
    score: float  # sum of token log-probs (EOS included if it ended), not length-normalized


def max_output_lengths(src_lengths: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
    """(B,) source lengths -> (B,) most decoding steps, floor(a * length) + b, at least 1.

    A hypothesis that ends in EOS has at most max_len - 1 tokens; one that reaches
    max_len tokens stops there without EOS.
    """
    lengths = torch.floor(max_len_a * src_lengths.double()).long() + max_len_b
    return lengths.clamp(min=1)


def _mask_specials(log_probs: Tensor, model: Searchable[M, St]) -> Tensor:
    """(N, V) log-probs with padding and BOS made impossible."""
    specials = torch.tensor([model.pad_id, model.bos_id], device=log_probs.device)
    return log_probs.index_fill(1, specials, -math.inf)


@torch.no_grad()
def greedy_search(
    model: Searchable[M, St],
    src: Tensor,
    src_lengths: Tensor,
    *,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
) -> list[Hypothesis]:
    """Take the most probable token at every step: (B, S) source, (B,) lengths -> B hypotheses."""
    memory, state = model.encode(src, src_lengths)
    max_lens = max_output_lengths(src_lengths, max_len_a, max_len_b).to(src.device)  # (B,)
    batch = src.size(0)
    tokens = src.new_full((batch, int(max_lens.max())), model.pad_id)  # (B, T)
    scores = torch.zeros(batch, device=src.device)  # (B,)
    lengths = max_lens.clone()  # (B,) tokens before EOS
    rows = torch.arange(batch, device=src.device)  # (B',) sentence of each live row
    prev = src.new_full((batch,), model.bos_id)  # (B',)
    for step in range(tokens.size(1)):
        log_probs, state, _ = model.decode_step(memory, state, prev)  # (B', V)
        best, prev = _mask_specials(log_probs, model).max(dim=1)  # (B',)
        tokens[rows, step] = prev
        scores[rows] += best
        ended = prev == model.eos_id  # (B',)
        lengths[rows[ended]] = step
        keep = (~ended & (step + 1 < max_lens[rows])).nonzero().squeeze(1)  # (B'',)
        if keep.numel() == 0:
            break
        if keep.numel() < rows.numel():
            rows, prev = rows[keep], prev[keep]
            memory, state = memory.index_select(keep), state.index_select(keep)
    return [
        Hypothesis(row[:n], score)
        for row, n, score in zip(tokens.tolist(), lengths.tolist(), scores.tolist(), strict=True)
    ]


@dataclass
class _Beams:
    """The live beams of the sentences still being searched."""

    rows: Tensor  # (B',) sentence of each row
    max_lens: Tensor  # (B',)
    scores: Tensor  # (B', K) sums of log-probs; -inf for a dead beam
    tokens: Tensor  # (B'*K, t) tokens so far
    best_finished: Tensor  # (B',) best length-normalized score finished so far, or -inf

    @classmethod
    def start(cls, max_lens: Tensor, beam_size: int) -> "_Beams":
        """Only beam 0 of each sentence is live, so that the K beams do not repeat each other."""
        batch = max_lens.size(0)
        scores = torch.full((batch, beam_size), -math.inf, device=max_lens.device)  # (B, K)
        scores[:, 0] = 0.0
        tokens = max_lens.new_empty((batch * beam_size, 0))  # (B*K, 0)
        rows = torch.arange(batch, device=max_lens.device)
        best_finished = torch.full((batch,), -math.inf, device=max_lens.device)
        return cls(rows, max_lens, scores, tokens, best_finished)

    def select(self, keep: Tensor, flat_keep: Tensor) -> "_Beams":
        """Keep the sentences `keep` (B'',), whose beam rows are `flat_keep` (B''*K,)."""
        return _Beams(
            self.rows[keep],
            self.max_lens[keep],
            self.scores[keep],
            self.tokens[flat_keep],
            self.best_finished[keep],
        )

    def can_improve(self, alpha: float) -> Tensor:
        """(B',) whether some live beam could still beat the best finished hypothesis.

        Adding tokens only lowers a sum of log-probs, so a live score s can at best
        reach s / max_len**alpha (the longest it may grow), or s itself for alpha=0.
        """
        best_live = self.scores.max(dim=1).values  # (B',)
        bound = best_live / self.max_lens.to(best_live.dtype) ** alpha
        return bound > self.best_finished


class _Candidates(NamedTuple):
    """Extensions of the beams of each sentence, best first."""

    scores: Tensor  # (B', C) sums of log-probs
    beams: Tensor  # (B', C) beam extended
    tokens: Tensor  # (B', C) token appended


@dataclass
class _Finished:
    """Complete hypotheses of all sentences, as flat tensors, one chunk per call to `add`."""

    chunks: list[tuple[Tensor, Tensor, Tensor, bool]] = field(default_factory=list)

    def add(self, rows: Tensor, tokens: Tensor, scores: Tensor, ended: bool) -> None:
        """(N,) sentences, (N, t) tokens without EOS, (N,) scores; `ended`: they end in EOS."""
        self.chunks.append((rows, tokens, scores, ended))

    def best(self, batch: int, alpha: float) -> list[Hypothesis]:
        """The best hypothesis of each sentence by score / length**alpha (EOS counts)."""
        found: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(batch)]
        for rows, tokens, scores, ended in self.chunks:
            normalized = scores / (tokens.size(1) + ended) ** alpha
            for row, toks, score, norm in zip(
                rows.tolist(), tokens.tolist(), scores.tolist(), normalized.tolist(), strict=True
            ):
                found[row].append((norm, Hypothesis(toks, score)))
        return [max(hyps, key=itemgetter(0))[1] for hyps in found]


def _top_candidates(scores: Tensor, log_probs: Tensor) -> _Candidates:
    """(B', K) beam scores and (B'*K, V) log-probs -> the K best extensions of each sentence."""
    batch, beam_size = scores.shape
    vocab = log_probs.size(1)
    total = scores.unsqueeze(2) + log_probs.view(batch, beam_size, vocab)  # (B', K, V)
    top, index = total.view(batch, -1).topk(beam_size, dim=1)  # (B', K)
    return _Candidates(top, index // vocab, index % vocab)


def _without_eos(candidates: _Candidates, eos_id: int) -> _Candidates:
    """The candidates with those ending in EOS (finished now) made dead: score -inf."""
    scores = candidates.scores.masked_fill(candidates.tokens == eos_id, -math.inf)
    return candidates._replace(scores=scores)


def _flat_rows(sentences: Tensor, beams: Tensor, beam_size: int) -> Tensor:
    """(N,) sentence rows and (N, K) or (K,) beams -> (N*K,) rows of (B'*K, ...) tensors."""
    return (sentences.unsqueeze(1) * beam_size + beams).view(-1)


def _collect_eos(
    beams: _Beams, candidates: _Candidates, eos_id: int, finished: _Finished, alpha: float
) -> Tensor:
    """Finish the candidates that end in EOS; -> (B',) best normalized score finished."""
    beam_size = beams.scores.size(1)
    scores = candidates.scores  # (B', K)
    ended = (candidates.tokens == eos_id) & scores.isfinite()  # (B', K)
    sentence, rank = ended.nonzero(as_tuple=True)  # (N,)
    flat = sentence * beam_size + candidates.beams[sentence, rank]  # (N,) rows of beams.tokens
    finished.add(beams.rows[sentence], beams.tokens[flat], scores[sentence, rank], ended=True)
    normalized = scores.masked_fill(~ended, -math.inf) / (beams.tokens.size(1) + 1) ** alpha
    return normalized.max(dim=1).values


def _extend(beams: _Beams, live: _Candidates) -> tuple[_Beams, Tensor]:
    """Continue with the live candidates; -> new beams and (B'*K,) old row of each new row."""
    batch, beam_size = beams.scores.shape
    sentences = torch.arange(batch, device=live.beams.device)  # (B',)
    reorder = _flat_rows(sentences, live.beams, beam_size)  # (B'*K,)
    tokens = torch.cat([beams.tokens[reorder], live.tokens.view(-1, 1)], dim=1)  # (B'*K, t+1)
    extended = _Beams(beams.rows, beams.max_lens, live.scores, tokens, beams.best_finished)
    return extended, reorder


def _collect_at_max_length(beams: _Beams, step: int, finished: _Finished) -> Tensor:
    """Add the live beams of sentences at their max length, unfinished; -> (B',) those sentences."""
    at_max = step + 1 >= beams.max_lens  # (B',)
    take = at_max.unsqueeze(1) & beams.scores.isfinite()  # (B', K)
    sentence = take.nonzero(as_tuple=True)[0]  # (N,)
    flat = take.view(-1).nonzero().squeeze(1)  # (N,)
    finished.add(beams.rows[sentence], beams.tokens[flat], beams.scores[take], ended=False)
    return at_max


@torch.no_grad()
def beam_search(
    model: Searchable[M, St],
    src: Tensor,
    src_lengths: Tensor,
    *,
    beam_size: int = 5,
    alpha: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
) -> list[Hypothesis]:
    """Keep the `beam_size` best prefixes of each sentence: (B, S), (B,) -> B hypotheses.

    Each step keeps the K best extensions of all live beams; those that end in EOS
    are finished and leave their slot empty, so beam size 1 is exactly greedy search.
    A sentence is done when no live beam can beat its best finished hypothesis any
    more (never merely because some hypotheses ended), or at its max length (its
    live beams then compete unfinished). Its best hypothesis is chosen by
    score / length**alpha, EOS counted in the length (alpha=0: raw score).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    batch = src.size(0)
    memory, state = model.encode(src, src_lengths)
    expand = torch.arange(batch, device=src.device).repeat_interleave(beam_size)  # (B*K,)
    memory, state = memory.index_select(expand), state.index_select(expand)
    max_lens = max_output_lengths(src_lengths, max_len_a, max_len_b).to(src.device)  # (B,)
    beams = _Beams.start(max_lens, beam_size)
    prev = src.new_full((batch * beam_size,), model.bos_id)  # (B'*K,)
    finished = _Finished()
    for step in range(int(max_lens.max())):
        log_probs, state, _ = model.decode_step(memory, state, prev)  # (B'*K, V)
        candidates = _top_candidates(beams.scores, _mask_specials(log_probs, model))
        just_finished = _collect_eos(beams, candidates, model.eos_id, finished, alpha)  # (B',)
        beams.best_finished = torch.maximum(beams.best_finished, just_finished)
        beams, reorder = _extend(beams, _without_eos(candidates, model.eos_id))
        state = state.index_select(reorder)
        at_max = _collect_at_max_length(beams, step, finished)
        done = at_max | ~beams.can_improve(alpha)  # (B',)
        keep = (~done).nonzero().squeeze(1)  # (B'',)
        if keep.numel() == 0:
            break
        if keep.numel() < done.numel():
            flat_keep = _flat_rows(keep, torch.arange(beam_size, device=src.device), beam_size)
            beams = beams.select(keep, flat_keep)
            memory, state = memory.index_select(flat_keep), state.index_select(flat_keep)
        prev = beams.tokens[:, -1]
    return finished.best(batch, alpha)
