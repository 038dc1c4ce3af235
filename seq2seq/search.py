"""Greedy and beam search over any model with `encode`, `decode_step` and `log_probs`.

Shapes: B batch, B' sentences still being searched, K beam, N n-best or rows, R open
beam rows, V target vocabulary, F decoder output size, S source length, T most output
steps, t tokens generated so far.

Both searches are batched: each time step runs one `decode_step` over all K beam rows
of every sentence still searched (K = 1 in greedy search), and a sentence leaves the
batch as soon as it is done; beam search then scores (`log_probs`) only the rows of
beams still open. Greedy search's loop, `decode_rows`, also serves sampling
(seq2seq.sampling). A hypothesis never contains padding, BOS or EOS. Its `log_prob` is
the sum of the model's log-probabilities of its tokens, EOS included when it ended in
EOS; its `score` is log_prob / lp(L), L its length with EOS (see `_length_penalty`).
A hypothesis that reaches its length limit stops there, scored without an EOS term
(fairseq forces EOS at the limit instead): that would take one more decoder step per
cut hypothesis, for outputs the limit should rarely cut (validation warns when the
references do not fit it); the exhaustive-search test scores the same way.
With `return_attention=True`, `attention` holds the decoder's weights over the
sentence's true source for each output token, EOS included (None for a model
without attention, and by default: keeping it costs time and memory).
"""

import math
from collections.abc import Callable
from operator import attrgetter
from typing import Literal, NamedTuple, Protocol, TypeVar, get_args

import torch
from torch import Tensor

from seq2seq.beam import (
    Beams,
    Finished,
    collect_at_max_length,
    collect_eos,
    extend,
    flat_rows,
    top_candidates,
    without_eos,
)

R = TypeVar("R", bound="Rows")
LengthPenalty = Literal["none", "average", "gnmt"]


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
    ) -> tuple[Tensor, St, Tensor | None]:
        """(B*K,) tokens -> (B*K, F) outputs, state, (B*K, S) attention or None.

        The state and tokens have K consecutive rows per memory row: K = 1 in greedy
        search, the beam size in beam search.
        """

    def log_probs(self, outputs: Tensor) -> Tensor:
        """(N, F) rows of `decode_step` outputs -> (N, V) log-probs of the next token.

        Apart from `decode_step` so that beam search skips the rows of closed beams in
        this step, the costliest one (the output projection).
        """


class Hypothesis(NamedTuple):
    """One output sentence."""

    tokens: list[int]  # without BOS and EOS
    score: float  # log_prob / lp(length with EOS): what ranks hypotheses
    log_prob: float  # sum of token log-probs, EOS included if it ended
    attention: Tensor | None  # (len(tokens) + ended, S_i) on the model's device, or None


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


def _length_penalty(length: int, kind: LengthPenalty, alpha: float) -> float:
    """lp(L) for a hypothesis of L tokens, EOS counted, BOS never: "none" 1, "average"
    L**alpha, "gnmt" ((5 + L) / 6)**alpha (Wu et al., 2016).

    Positive and nondecreasing in L for alpha >= 0, which `Beams.can_improve` (seq2seq.beam) needs.
    """
    if kind == "average":
        return float(length) ** alpha
    if kind == "gnmt":
        return ((5 + length) / 6) ** alpha
    return 1.0


def _penalty_table(kind: LengthPenalty, alpha: float, longest: int, device: torch.device) -> Tensor:
    """(longest + 1,) lp(L) at index L, computed in Python so that it is the same bits in
    every call (batch invariance; greedy and beam size 1 give equal scores)."""
    return torch.tensor(
        [_length_penalty(n, kind, alpha) for n in range(longest + 1)], device=device
    )


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


def _min_lengths(max_lens: Tensor, min_len: int) -> Tensor:
    """(B,) tokens before which EOS is banned: min_len, at most max_len - 1."""
    return (max_lens - 1).clamp(max=min_len)


def _ban_repeated_ngrams(log_probs: Tensor, tokens: Tensor, n: int) -> Tensor:
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


def _constrain(
    log_probs: Tensor,
    tokens: Tensor,
    too_short: Tensor | None,
    model: Searchable[M, St],
    no_repeat_ngram: int,
) -> Tensor:
    """(N, V) log-probs with the tokens not allowed next made -inf (in place).

    Never padding or BOS; no token that repeats an n-gram of `tokens` (N, t); no EOS
    in the rows `too_short` (N,) (None: no minimum length), unless nothing else is left
    there (so that a row is never stuck: its output ends short rather than with padding).
    """
    specials = torch.tensor([model.pad_id, model.bos_id], device=log_probs.device)
    log_probs = _ban_repeated_ngrams(
        log_probs.index_fill_(1, specials, -math.inf), tokens, no_repeat_ngram
    )
    if too_short is None:
        return log_probs
    is_eos = torch.arange(log_probs.size(1), device=log_probs.device) == model.eos_id  # (V,)
    ban_eos = too_short & log_probs.masked_fill(is_eos, -math.inf).isfinite().any(dim=1)  # (N,)
    return log_probs.masked_fill_(ban_eos.unsqueeze(1) & is_eos, -math.inf)


def _own_attention(hypothesis: Hypothesis, src_length: int) -> Hypothesis:
    """`hypothesis` with its own copy of its attention over the true source: (L, src_length)."""
    if hypothesis.attention is None:
        return hypothesis
    return hypothesis._replace(attention=hypothesis.attention[:, :src_length].clone())


# How `decode_rows` chooses each next token: (B', V) allowed log-probs, (B',) the row (of B)
# each is, the step -> (B',) tokens.
Pick = Callable[[Tensor, Tensor, int], Tensor]


def _most_probable(log_probs: Tensor, rows: Tensor, step: int) -> Tensor:
    """Greedy search's pick: (B', V) -> (B',) the most probable tokens."""
    return log_probs.max(dim=1).indices


@torch.no_grad()
def greedy_search(
    model: Searchable[M, St],
    src: Tensor,
    src_lengths: Tensor,
    *,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    return_attention: bool = False,
    length_penalty: LengthPenalty = "average",
    alpha: float = 1.0,
) -> list[Hypothesis]:
    """Take the most probable allowed token at every step: (B, S), (B,) -> B hypotheses.

    `length_penalty` and `alpha` do not change the tokens chosen, only each `score`,
    so that it compares with beam search's. See `beam_search` for the other options.
    """
    check_options(length_penalty, alpha, min_len, no_repeat_ngram)
    memory, state = model.encode(src, src_lengths)
    max_lens = max_output_lengths(src_lengths, max_len_a, max_len_b).to(src.device)  # (B,)
    return decode_rows(
        model,
        memory,
        state,
        src_lengths,
        max_lens,
        _most_probable,
        min_len=min_len,
        no_repeat_ngram=no_repeat_ngram,
        return_attention=return_attention,
        length_penalty=length_penalty,
        alpha=alpha,
    )


def decode_rows(
    model: Searchable[M, St],
    memory: M,
    state: St,
    src_lengths: Tensor,
    max_lens: Tensor,
    pick: Pick,
    *,
    min_len: int,
    no_repeat_ngram: int,
    return_attention: bool,
    length_penalty: LengthPenalty,
    alpha: float,
) -> list[Hypothesis]:
    """One output per row of `memory` and `state`, one token at a time: B hypotheses.

    Greedy search and sampling (seq2seq.sampling). `src_lengths` (B,): each row's source
    length; `max_lens` (B,): its most steps. Each step `pick`s every live row's token
    among those `_constrain` allows; a row leaves the batch when it ends (EOS or max length).
    """
    min_lens = _min_lengths(max_lens, min_len)  # (B,)
    batch, longest = max_lens.size(0), int(max_lens.max())
    tokens = max_lens.new_full((batch, longest), model.pad_id)  # (B, T)
    sums = torch.zeros(batch, device=max_lens.device)  # (B,) log-probs
    attention: Tensor | None = None  # (B, T, S) once the model gives some
    lengths = max_lens.clone()  # (B,) tokens before EOS
    rows = torch.arange(batch, device=max_lens.device)  # (B',) row of each live row
    prev = max_lens.new_full((batch,), model.bos_id)  # (B',)
    for step in range(longest):
        outputs, state, weights = model.decode_step(memory, state, prev)  # (B', F), (B', S)
        log_probs = model.log_probs(outputs)  # (B', V)
        weights = weights if return_attention else None
        too_short = step < min_lens[rows] if min_len > 0 else None  # (B',)
        log_probs = _constrain(log_probs, tokens[rows, :step], too_short, model, no_repeat_ngram)
        prev = pick(log_probs, rows, step)  # (B',)
        tokens[rows, step] = prev
        sums[rows] += log_probs.gather(1, prev.unsqueeze(1)).squeeze(1)
        if weights is not None:
            if attention is None:
                attention = weights.new_zeros(batch, longest, weights.size(1))
            attention[rows, step] = weights
        ended = prev == model.eos_id  # (B',)
        lengths[rows[ended]] = step
        keep = (~ended & (step + 1 < max_lens[rows])).nonzero().squeeze(1)  # (B'',)
        if keep.numel() == 0:
            break
        if keep.numel() < rows.numel():
            rows, prev = rows[keep], prev[keep]
            memory, state = memory.index_select(keep), state.index_select(keep)
    sizes = lengths + (lengths < max_lens)  # (B,) lengths with EOS
    scores = sums / _penalty_table(length_penalty, alpha, longest, max_lens.device)[sizes]  # (B,)
    columns = tokens.tolist(), lengths.tolist(), sizes.tolist(), scores.tolist(), sums.tolist()
    found = [
        Hypothesis(row[:n], score, log_prob, None if attention is None else attention[i, :size])
        for i, (row, n, size, score, log_prob) in enumerate(zip(*columns, strict=True))
    ]
    return [_own_attention(h, n) for h, n in zip(found, src_lengths.tolist(), strict=True)]


def _nbest(finished: list[Finished], nbest: int, src_lengths: list[int]) -> list[list[Hypothesis]]:
    """The `nbest` best finished hypotheses of each sentence by score, best first."""
    found: list[list[Hypothesis]] = [[] for _ in src_lengths]
    for chunk in finished:
        attention: list[Tensor | None] = [None] * chunk.rows.numel()
        if chunk.attention is not None:
            attention = list(chunk.attention.unbind())  # (t + ended, S) each
        columns = chunk.rows.tolist(), chunk.tokens.tolist(), chunk.scores.tolist()
        for row, tokens, score, log_prob, weights in zip(
            *columns, chunk.log_probs.tolist(), attention, strict=True
        ):
            found[row].append(Hypothesis(tokens, score, log_prob, weights))
    return [
        [_own_attention(h, n) for h in sorted(hyps, key=attrgetter("score"), reverse=True)[:nbest]]
        for hyps, n in zip(found, src_lengths, strict=True)
    ]


@torch.no_grad()
def beam_search(
    model: Searchable[M, St],
    src: Tensor,
    src_lengths: Tensor,
    *,
    beam_size: int = 5,
    nbest: int = 1,
    length_penalty: LengthPenalty = "average",
    alpha: float = 1.0,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Keep the `beam_size` best prefixes of each sentence: (B, S), (B,) -> B n-best lists.

    Each step keeps the K best extensions of all live beams; those that end in EOS
    are finished and leave their slot empty, so beam size 1 is exactly greedy search.
    A sentence is done when no live beam can beat its `nbest`-th best finished
    hypothesis any more (never merely because some hypotheses ended), or at its max
    length (its live beams then compete unfinished). Hypotheses rank by score =
    log_prob / lp(L), L counting EOS: lp = 1 ("none"), L**alpha ("average") or
    ((5 + L) / 6)**alpha ("gnmt"). Each list holds up to `nbest` distinct outputs.

    EOS is banned before `min_len` tokens (at most max_len - 1), and with
    `no_repeat_ngram` = n > 0 so is any token that would repeat an n-gram.
    """
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"need 1 <= nbest <= beam_size, got {nbest} and {beam_size}")
    check_options(length_penalty, alpha, min_len, no_repeat_ngram)
    batch = src.size(0)
    memory, state = model.encode(src, src_lengths)
    expand = torch.arange(batch, device=src.device).repeat_interleave(beam_size)  # (B*K,)
    state = state.index_select(expand)  # K rows per sentence; the memory stays one row
    max_lens = max_output_lengths(src_lengths, max_len_a, max_len_b).to(src.device)  # (B,)
    longest = int(max_lens.max())
    penalties = _penalty_table(length_penalty, alpha, longest, src.device)  # (T+1,)
    beams = Beams.start(max_lens, _min_lengths(max_lens, min_len), beam_size, nbest)
    prev = src.new_full((batch * beam_size,), model.bos_id)  # (B'*K,)
    finished: list[Finished] = []
    for _ in range(longest):
        outputs, state, weights = model.decode_step(memory, state, prev)  # (B'*K, F), (B'*K, S)
        weights = weights if return_attention else None
        live = beams.live_rows()  # (R,)
        log_probs = model.log_probs(outputs[live])  # (R, V)
        too_short = beams.too_short()[live] if min_len > 0 else None
        log_probs = _constrain(log_probs, beams.tokens[live], too_short, model, no_repeat_ngram)
        candidates = top_candidates(beams.scores, log_probs, live)
        ended, ended_scores = collect_eos(beams, candidates, weights, model.eos_id, penalties)
        beams.note_finished(ended_scores)
        beams, reorder = extend(beams, without_eos(candidates, model.eos_id), weights)
        state = state.index_select(reorder)
        unended, at_max = collect_at_max_length(beams, penalties)
        finished += [ended, unended]
        done = at_max | ~beams.can_improve(penalties)  # (B',)
        keep = (~done).nonzero().squeeze(1)  # (B'',)
        if keep.numel() == 0:
            break
        if keep.numel() < done.numel():
            flat_keep = flat_rows(keep, torch.arange(beam_size, device=src.device), beam_size)
            beams = beams.select(keep, flat_keep)
            memory, state = memory.index_select(keep), state.index_select(flat_keep)
        prev = beams.tokens[:, -1]
    return _nbest(finished, nbest, src_lengths.tolist())
