"""What the searches allow and how they score (`seq2seq.search`, `seq2seq.sampling`):
output length limits, length penalties, the coverage penalty, the minimum length, n-gram
blocking, and the special tokens never produced.

Shapes: N rows, V target vocabulary, S source length, t tokens generated so far.
"""

import math
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import torch
from torch import Tensor

LengthPenalty = Literal["none", "average", "gnmt"]
CoveragePenalty = Literal["none", "wu"]
COVERAGE_FLOOR = 1e-10  # the least coverage `coverage_penalty` counts: log of it is -23


class SpecialIds(Protocol):
    """The ids of a model's special target tokens."""

    pad_id: int
    bos_id: int
    eos_id: int


# Default output length limit a·S + b (S source tokens). The limit bounds what an open
# hypothesis could still score (see `Beams.can_improve`), so a loose one makes beam
# search with length normalization run on long after its best output has ended.
MAX_LEN_A = 1.2
MAX_LEN_B = 5


def max_output_lengths(src_lengths: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
    """(B,) source lengths -> (B,) most decoding steps, floor(a * length) + b, at least 1.

    A hypothesis that ends in EOS has at most max_len - 1 tokens; one that reaches
    max_len tokens stops there without EOS.
    """
    lengths = torch.floor(max_len_a * src_lengths.double()).long() + max_len_b
    return lengths.clamp(min=1)


def at_length_limit(
    lengths: list[int], src_lengths: Tensor, max_len_a: float, max_len_b: int
) -> list[bool]:
    """For outputs of `lengths` tokens (without EOS), one per source: whether each reaches its
    length limit, so that search stops it there without EOS (or could not produce it)."""
    limits = max_output_lengths(src_lengths, max_len_a, max_len_b).tolist()
    return [length >= limit for length, limit in zip(lengths, limits, strict=True)]


def length_penalty(length: int, kind: LengthPenalty, alpha: float) -> float:
    """lp(L) for a hypothesis of L tokens, EOS counted, BOS never: "none" 1, "average"
    L**alpha, "gnmt" ((5 + L) / 6)**alpha (Wu et al., 2016).

    Positive and nondecreasing in L for alpha >= 0, which `Beams.can_improve` (seq2seq.beam) needs.
    """
    if kind == "average":
        return float(length) ** alpha
    if kind == "gnmt":
        return ((5 + length) / 6) ** alpha
    return 1.0


def penalty_table(kind: LengthPenalty, alpha: float, longest: int, device: torch.device) -> Tensor:
    """(longest + 1,) lp(L) at index L, computed in Python so that it is the same bits in
    every call (batch invariance; greedy and beam size 1 give equal scores)."""
    return torch.tensor([length_penalty(n, kind, alpha) for n in range(longest + 1)], device=device)


def coverage_start(src_lengths: Tensor, width: int) -> Tensor:
    """(N,) source lengths -> (N, width) coverage before any output: 0 over the source, 1
    over padding (which attention never reaches and `coverage_penalty` must not count)."""
    positions = torch.arange(width, device=src_lengths.device)  # (S,)
    return (positions >= src_lengths.unsqueeze(1)).float()  # (N, S)


def coverage_penalty(coverage: Tensor, beta: float) -> Tensor:
    """(N, S) attention summed over each output's tokens (EOS included) -> (N,) cp =
    beta * sum_i log(min(coverage_i, 1)) (Wu et al., 2016): 0 once every source token got
    a whole token's attention, below 0 else, and never falling as an output grows. A
    coverage under COVERAGE_FLOOR counts as it (attention that underflowed to 0 would make
    the score -inf)."""
    return beta * coverage.clamp(min=COVERAGE_FLOOR, max=1.0).log().sum(dim=1)


@dataclass(frozen=True)
class Scoring:
    """What ranks finished hypotheses: log_prob / lp(L) + cp, cp the coverage penalty (0
    without one). lp is positive and nondecreasing in L and cp <= 0, so an open beam of
    log-prob s and at most `max_len` tokens scores at most s / lp(max_len) once finished:
    `Beams.can_improve` (seq2seq.beam) stops searching on that bound."""

    penalties: Tensor  # (T+1,) lp(L) at index L (`penalty_table`)
    coverage_beta: float  # 0: no coverage penalty

    def __call__(self, log_probs: Tensor, lengths: Tensor | int, coverage: Tensor | None) -> Tensor:
        """(N,) sums of log-probs of outputs of `lengths` tokens (EOS counted), and (N, S)
        their coverage (None without a penalty) -> (N,) scores."""
        scores = log_probs / self.penalties[lengths]
        if coverage is None:
            return scores
        return scores + coverage_penalty(coverage, self.coverage_beta)

    def needs_coverage(self) -> bool:
        return self.coverage_beta > 0


def make_scoring(
    kind: LengthPenalty,
    alpha: float,
    coverage: CoveragePenalty,
    beta: float,
    longest: int,
    device: torch.device,
) -> Scoring:
    """The `Scoring` of outputs of up to `longest` tokens; ValueError for a bad coverage
    option (see `check_options` for the others)."""
    if coverage not in get_args(CoveragePenalty):
        raise ValueError(
            f"coverage_penalty must be one of {get_args(CoveragePenalty)}, got {coverage!r}"
        )
    if beta < 0:
        raise ValueError(f"beta must be at least 0 (a coverage penalty, not a bonus), got {beta}")
    beta = beta if coverage == "wu" else 0.0
    return Scoring(penalty_table(kind, alpha, longest, device), beta)


def check_options(kind: LengthPenalty, alpha: float, min_len: int, no_repeat_ngram: int) -> None:
    """Raise ValueError for an unknown length penalty or a negative setting."""
    if kind not in get_args(LengthPenalty):
        raise ValueError(f"length_penalty must be one of {get_args(LengthPenalty)}, got {kind!r}")
    if alpha < 0:
        raise ValueError(f"alpha must be at least 0 (lp must not fall with length), got {alpha}")
    if min_len < 0 or no_repeat_ngram < 0:
        raise ValueError(
            f"min_len and no_repeat_ngram must be >= 0, got {min_len}, {no_repeat_ngram}"
        )


def min_lengths(max_lens: Tensor, min_len: int) -> Tensor:
    """(B,) tokens before which EOS is banned: min_len, at most max_len - 1."""
    return (max_lens - 1).clamp(max=min_len)


def ban_repeated_ngrams(log_probs: Tensor, tokens: Tensor, n: int) -> Tensor:
    """(N, V) log-probs with -inf for every token that would complete an n-gram already in
    `tokens` (N, t); n=0 bans nothing.

    Compares the last n-1 tokens with all t-n+1 earlier windows: O(N * t * n) time and
    memory per step, O(N * T^2 * n) over a whole output.
    """
    if n == 0 or tokens.size(1) < n:
        return log_probs
    batch, vocab = log_probs.shape
    windows = tokens.unfold(1, n, 1)  # (N, t-n+1, n)
    last = tokens[:, tokens.size(1) - n + 1 :].unsqueeze(1)  # (N, 1, n-1)
    seen = (windows[:, :, :-1] == last).all(dim=2)  # (N, t-n+1) window starts like the end
    banned = windows[:, :, -1].masked_fill(~seen, vocab)  # (N, t-n+1); column V: a dummy
    hit = torch.zeros(batch, vocab + 1, dtype=torch.bool, device=log_probs.device)
    hit.scatter_(1, banned, True)  # (N, V+1)
    return log_probs.masked_fill(hit[:, :vocab], -math.inf)


def constrain(
    log_probs: Tensor,
    tokens: Tensor,
    too_short: Tensor | None,
    model: SpecialIds,
    no_repeat_ngram: int,
) -> Tensor:
    """(N, V) log-probs with the tokens not allowed next made -inf (in place).

    Never padding or BOS; no token that repeats an n-gram of `tokens` (N, t); no EOS
    in the rows `too_short` (N,) (None: no minimum length), unless nothing else is left
    there (so that a row is never stuck: its output ends short rather than with padding).
    """
    specials = torch.tensor([model.pad_id, model.bos_id], device=log_probs.device)
    log_probs = ban_repeated_ngrams(
        log_probs.index_fill_(1, specials, -math.inf), tokens, no_repeat_ngram
    )
    if too_short is None:
        return log_probs
    is_eos = torch.arange(log_probs.size(1), device=log_probs.device) == model.eos_id  # (V,)
    ban_eos = too_short & log_probs.masked_fill(is_eos, -math.inf).isfinite().any(dim=1)  # (N,)
    return log_probs.masked_fill_(ban_eos.unsqueeze(1) & is_eos, -math.inf)
