"""Random outputs from any `Searchable` (seq2seq.search), e.g. for back-translation: as
fairseq's `--sampling` and OpenNMT-py's `random_sampling_topk`.

Shapes: B batch, N samples per sentence, B' rows still being sampled (of B*N), V target
vocabulary, S source length, T most output steps.

Batched like greedy search (`decode_rows`): a sentence's N samples are N consecutive rows
of each `decode_step`, and a row leaves the batch when it ends. Each step draws a row's
next token from the model's distribution over the tokens search allows (no padding or
BOS, `min_len`, `no_repeat_ngram`), filtered: log-probs divided by `temperature`, only
the `topk` most probable kept (0: all), of those only the fewest most probable holding
at least `topp` of their mass, renormalized. The draw is an inverse CDF over the kept
tokens, most probable first, at a uniform drawn up front: sentence i's (N, T_i) uniforms
(T_i its length limit) come from a CPU generator of its own, seeded with `seeds[i]`.
So a sentence's samples do not depend on the batch, its place in it or the device, and
its first n samples are those of num_samples=n (all up to the float rounding of the
model's probabilities, which may flip a draw that falls on a boundary).
A hypothesis's `log_prob` sums the model's own log-probs of its tokens (unfiltered, at
temperature 1), and score = log_prob / lp(L) as in search.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from seq2seq.search import Hypothesis, M, Pick, Searchable, St, decode_rows
from seq2seq.search_rules import (
    MAX_LEN_A,
    MAX_LEN_B,
    LengthPenalty,
    check_options,
    make_scoring,
    max_output_lengths,
)


def _check_filters(topk: int, topp: float, temperature: float) -> None:
    """Raise ValueError for a negative topk, topp outside (0, 1] or temperature <= 0."""
    if topk < 0:
        raise ValueError(f"topk must be at least 0 (0: no limit), got {topk}")
    if not 0 < topp <= 1:
        raise ValueError(f"topp must be in (0, 1], got {topp}")
    if not temperature > 0:
        raise ValueError(f"temperature must be above 0, got {temperature}")


@dataclass(frozen=True)
class Sampling:
    """How `Translator.translate_nbest` samples: `sample_search`'s filters, and the seed
    that each sentence's own seed derives from (`seeds`)."""

    topk: int = 0
    topp: float = 1.0
    temperature: float = 1.0
    seed: int = 1

    def __post_init__(self) -> None:
        _check_filters(self.topk, self.topp, self.temperature)
        if self.seed < 0:
            raise ValueError(f"seed must be at least 0, got {self.seed}")

    def seeds(self, sentence_ids: Sequence[int]) -> list[int]:
        """A 63-bit generator seed per sentence from `seed` and the sentence's id (>= 0)
        alone: NumPy's SeedSequence, child `sentence_id` of `seed`."""
        children = (np.random.SeedSequence(self.seed, spawn_key=(i,)) for i in sentence_ids)
        return [int(child.generate_state(1, np.uint64)[0]) >> 1 for child in children]


def _uniforms(seeds: list[int], num_samples: int, max_lens: list[int]) -> Tensor:
    """(B*N, T) float64 uniforms in [0, 1): sentence i's N rows are (N, max_lens[i]) drawn
    from a CPU generator seeded with seeds[i], zero-padded to T."""
    longest = max(max_lens)
    drawn = []
    for seed, max_len in zip(seeds, max_lens, strict=True):
        generator = torch.Generator().manual_seed(seed)
        rows = torch.rand(num_samples, max_len, generator=generator, dtype=torch.float64)
        drawn.append(F.pad(rows, (0, longest - max_len)))
    return torch.cat(drawn)


def _kept(probs: Tensor, cdf: Tensor, topk: int, topp: float) -> Tensor:
    """(B', V) probabilities sorted most probable first and their (B', V) cumulative sums
    -> (B',) how many lead tokens the filters keep: at least 1, none of probability 0."""
    kept = (probs > 0).sum(dim=1)  # (B',)
    if topk > 0:
        kept = kept.clamp(max=topk)
    if topp < 1:
        mass = cdf.gather(1, (kept - 1).unsqueeze(1))  # (B', 1) mass of the kept tokens
        kept = (cdf < topp * mass).sum(dim=1) + 1  # the fewest that hold topp of it
    return kept


def _draw(
    log_probs: Tensor, uniforms: Tensor, topk: int, topp: float, temperature: float
) -> Tensor:
    """(B', V) log-probs (-inf: not allowed), (B',) uniforms -> (B',) tokens drawn by inverse
    CDF from the filtered distribution, its tokens most probable first (ties: lower id)."""
    probs = torch.softmax(log_probs / temperature, dim=1)  # (B', V)
    probs, order = probs.sort(dim=1, descending=True, stable=True)  # (B', V) each
    cdf = probs.double().cumsum(dim=1)  # (B', V)
    last = _kept(probs, cdf, topk, topp).unsqueeze(1) - 1  # (B', 1) last kept position
    targets = uniforms.unsqueeze(1) * cdf.gather(1, last)  # (B', 1) in [0, kept mass)
    positions = torch.searchsorted(cdf, targets, right=True).minimum(last)  # (B', 1)
    return order.gather(1, positions).squeeze(1)


def _sampler(uniforms: Tensor, topk: int, topp: float, temperature: float) -> Pick:
    """`decode_rows`'s pick: draw row r's token at step t with uniforms[r, t] (B*N, T)."""

    def pick(log_probs: Tensor, rows: Tensor, step: int) -> Tensor:
        return _draw(log_probs, uniforms[rows, step], topk, topp, temperature)

    return pick


@torch.no_grad()
def sample_search(
    model: Searchable[M, St],
    src: Tensor,
    src_lengths: Tensor,
    *,
    seeds: Tensor | list[int],
    num_samples: int = 1,
    topk: int = 0,
    topp: float = 1.0,
    temperature: float = 1.0,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    return_attention: bool = False,
    length_penalty: LengthPenalty = "average",
    alpha: float = 1.0,
) -> list[list[Hypothesis]]:
    """Draw `num_samples` outputs of each sentence: (B, S), (B,) -> B lists, in draw order.

    `seeds` (B,): each sentence's generator seed (e.g. from `Sampling.seeds`). topk=1, or a
    temperature near 0, is greedy search. See `beam_search` for the other options.
    """
    check_options(length_penalty, alpha, min_len, no_repeat_ngram)
    _check_filters(topk, topp, temperature)
    seeds = seeds.tolist() if isinstance(seeds, Tensor) else list(seeds)
    if num_samples < 1 or len(seeds) != src.size(0):
        raise ValueError(
            f"need num_samples >= 1 and one seed a sentence, got {num_samples} and "
            f"{len(seeds)} seeds for {src.size(0)} sentences"
        )
    expand = torch.arange(src.size(0), device=src.device).repeat_interleave(num_samples)  # (B*N,)
    memory, state = model.encode(src, src_lengths)
    memory, state = memory.index_select(expand), state.index_select(expand)  # B*N rows
    max_lens = max_output_lengths(src_lengths, max_len_a, max_len_b).to(src.device)  # (B,)
    uniforms = _uniforms(seeds, num_samples, max_lens.tolist()).to(src.device)  # (B*N, T)
    found = decode_rows(
        model,
        memory,
        state,
        src_lengths.to(src.device)[expand],
        max_lens[expand],
        _sampler(uniforms, topk, topp, temperature),
        min_len=min_len,
        no_repeat_ngram=no_repeat_ngram,
        return_attention=return_attention,
        scoring=make_scoring(length_penalty, alpha, "none", 0.0, int(max_lens.max()), src.device),
    )
    return [found[i : i + num_samples] for i in range(0, len(found), num_samples)]
