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
EOS; its `score` is log_prob / lp(L), L its length with EOS (see
`seq2seq.search_rules.length_penalty`), plus the coverage penalty when one is asked for.
A hypothesis that reaches its length limit stops there, scored without an EOS term
(fairseq forces EOS at the limit instead): that would take one more decoder step per
cut hypothesis, for outputs the limit should rarely cut (validation warns when the
references do not fit it); the exhaustive-search test scores the same way.
With `return_attention=True`, `attention` holds the decoder's weights over the
sentence's true source for each output token, EOS included (None for a model
without attention, and by default: keeping it costs time and memory).
"""

from collections.abc import Callable
from operator import attrgetter
from typing import NamedTuple, Protocol, TypeVar

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
from seq2seq.search_rules import (
    MAX_LEN_A,
    MAX_LEN_B,
    CoveragePenalty,
    LengthPenalty,
    Scoring,
    SpecialIds,
    check_options,
    constrain,
    coverage_start,
    make_scoring,
    max_output_lengths,
    min_lengths,
)

R = TypeVar("R", bound="Rows")


class Rows(Protocol):
    """Batched tensors (encoder memory, decoder state) whose batch rows can be picked."""

    def index_select(self: R, index: Tensor) -> R: ...


M = TypeVar("M", bound=Rows)
St = TypeVar("St", bound=Rows)


class Searchable(SpecialIds, Protocol[M, St]):
    """What search needs from a model."""

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
    score: float  # log_prob / lp(length with EOS) (+ coverage penalty): what ranks them
    log_prob: float  # sum of token log-probs, EOS included if it ended
    attention: Tensor | None  # (len(tokens) + ended, S_i) on the model's device, or None


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
    coverage_penalty: CoveragePenalty = "none",
    beta: float = 0.0,
) -> list[Hypothesis]:
    """Take the most probable allowed token at every step: (B, S), (B,) -> B hypotheses.

    The length and coverage penalties do not change the tokens chosen, only each `score`,
    so that it compares with beam search's. See `beam_search` for the other options.
    """
    check_options(length_penalty, alpha, min_len, no_repeat_ngram)
    memory, state = model.encode(src, src_lengths)
    max_lens = max_output_lengths(src_lengths, max_len_a, max_len_b).to(src.device)  # (B,)
    longest = int(max_lens.max())
    scoring = make_scoring(length_penalty, alpha, coverage_penalty, beta, longest, src.device)
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
        scoring=scoring,
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
    scoring: Scoring,
) -> list[Hypothesis]:
    """One output per row of `memory` and `state`, one token at a time: B hypotheses.

    Greedy search and sampling (seq2seq.sampling). `src_lengths` (B,): each row's source
    length; `max_lens` (B,): its most steps. Each step `pick`s every live row's token
    among those `constrain` allows; a row leaves the batch when it ends (EOS or max length).
    `scoring` scores the outputs (the length penalty's table holds `max_lens.max()`).
    """
    min_lens = min_lengths(max_lens, min_len)  # (B,)
    batch, longest = max_lens.size(0), int(max_lens.max())
    tokens = max_lens.new_full((batch, longest), model.pad_id)  # (B, T)
    sums = torch.zeros(batch, device=max_lens.device)  # (B,) log-probs
    attention: Tensor | None = None  # (B, T, S) once the model gives some
    coverage: Tensor | None = None  # (B, S) with a coverage penalty
    lengths = max_lens.clone()  # (B,) tokens before EOS
    rows = torch.arange(batch, device=max_lens.device)  # (B',) row of each live row
    prev = max_lens.new_full((batch,), model.bos_id)  # (B',)
    for step in range(longest):
        outputs, state, step_attention = model.decode_step(memory, state, prev)  # (B', F), (B', S)
        log_probs = model.log_probs(outputs)  # (B', V)
        if scoring.needs_coverage():
            coverage = _coverage_or_start(coverage, step_attention, src_lengths)  # (B, S)
            coverage[rows] += step_attention
        weights = step_attention if return_attention else None
        too_short = step < min_lens[rows] if min_len > 0 else None  # (B',)
        log_probs = constrain(log_probs, tokens[rows, :step], too_short, model, no_repeat_ngram)
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
    scores = scoring(sums, sizes, coverage)  # (B,)
    columns = tokens.tolist(), lengths.tolist(), sizes.tolist(), scores.tolist(), sums.tolist()
    found = [
        Hypothesis(row[:n], score, log_prob, None if attention is None else attention[i, :size])
        for i, (row, n, size, score, log_prob) in enumerate(zip(*columns, strict=True))
    ]
    return [_own_attention(h, n) for h, n in zip(found, src_lengths.tolist(), strict=True)]


def _coverage_or_start(
    coverage: Tensor | None, weights: Tensor | None, src_lengths: Tensor
) -> Tensor:
    """The (N, S) coverage so far, or at the first step (None) each row's start for
    (N,) `src_lengths` (`coverage_start`); ValueError if the model gave no (N, S) attention
    `weights` for the coverage penalty to sum."""
    if weights is None:
        raise ValueError("the coverage penalty needs a model with attention")
    if coverage is not None:
        return coverage
    return coverage_start(src_lengths.to(weights.device), weights.size(1))


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
    coverage_penalty: CoveragePenalty = "none",
    beta: float = 0.0,
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
    ((5 + L) / 6)**alpha ("gnmt"); `coverage_penalty="wu"` adds beta * sum_i
    log(min(c_i, 1)), c_i the attention source token i received over the output, EOS
    included (Wu et al., 2016; models with attention only). Neither changes which
    extensions a beam keeps, only how finished hypotheses rank, as in GNMT and OpenNMT-py.
    Each list holds up to `nbest` distinct outputs.

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
    scoring = make_scoring(length_penalty, alpha, coverage_penalty, beta, longest, src.device)
    beams = Beams.start(max_lens, min_lengths(max_lens, min_len), beam_size, nbest)
    prev = src.new_full((batch * beam_size,), model.bos_id)  # (B'*K,)
    finished: list[Finished] = []
    for _ in range(longest):
        outputs, state, step_attention = model.decode_step(memory, state, prev)  # (B'*K, F)
        weights = step_attention if return_attention else None  # (B'*K, S)
        covered = None  # (B'*K, S) coverage with this step's attention
        if scoring.needs_coverage():  # at the first step every row is still searched
            rows_lengths = src_lengths.to(src.device)[expand]  # (B*K,)
            beams.coverage = _coverage_or_start(beams.coverage, step_attention, rows_lengths)
            covered = beams.coverage + step_attention
        live = beams.live_rows()  # (R,)
        log_probs = model.log_probs(outputs[live])  # (R, V)
        too_short = beams.too_short()[live] if min_len > 0 else None
        log_probs = constrain(log_probs, beams.tokens[live], too_short, model, no_repeat_ngram)
        candidates = top_candidates(beams.scores, log_probs, live)
        ended, ended_scores = collect_eos(
            beams, candidates, weights, covered, model.eos_id, scoring
        )
        beams.note_finished(ended_scores)
        beams, reorder = extend(beams, without_eos(candidates, model.eos_id), weights, covered)
        state = state.index_select(reorder)
        unended, at_max = collect_at_max_length(beams, scoring)
        finished += [ended, unended]
        done = at_max | ~beams.can_improve(scoring)  # (B',)
        keep = (~done).nonzero().squeeze(1)  # (B'',)
        if keep.numel() == 0:
            break
        if keep.numel() < done.numel():
            flat_keep = flat_rows(keep, torch.arange(beam_size, device=src.device), beam_size)
            beams = beams.select(keep, flat_keep)
            memory, state = memory.index_select(keep), state.index_select(flat_keep)
        prev = beams.tokens[:, -1]
    return _nbest(finished, nbest, src_lengths.tolist())
