"""The beams of a batch and the steps of beam search (`seq2seq.search.beam_search`).

Shapes: B' sentences still being searched, K beam, N n-best or hypotheses, R open
beam rows, V target vocabulary, S source length, t tokens generated so far.
"""

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from seq2seq.search_rules import Scoring


@dataclass
class Beams:
    """The live beams of the sentences still being searched."""

    rows: Tensor  # (B',) sentence of each row
    max_lens: Tensor  # (B',)
    min_lens: Tensor  # (B',) tokens before which EOS is banned
    scores: Tensor  # (B', K) sums of log-probs; -inf for a dead beam
    tokens: Tensor  # (B'*K, t) tokens so far
    attention: Tensor | None  # (B'*K, t, S) weights of each token; None if not asked for
    coverage: Tensor | None  # (B'*K, S) attention summed over the tokens; None if not scored
    top_finished: Tensor  # (B', N) best normalized scores finished so far, best first, or -inf

    @classmethod
    def start(cls, max_lens: Tensor, min_lens: Tensor, beam_size: int, nbest: int) -> "Beams":
        """Only beam 0 of each sentence is live, so that the K beams do not repeat each other.
        No coverage yet: the search sets it from the first step's attention."""
        batch, device = max_lens.size(0), max_lens.device
        scores = torch.full((batch, beam_size), -math.inf, device=device)  # (B, K)
        scores[:, 0] = 0.0
        tokens = max_lens.new_empty((batch * beam_size, 0))  # (B*K, 0)
        top_finished = torch.full((batch, nbest), -math.inf, device=device)  # (B, N)
        rows = torch.arange(batch, device=device)
        return cls(rows, max_lens, min_lens, scores, tokens, None, None, top_finished)

    def select(self, keep: Tensor, flat_keep: Tensor) -> "Beams":
        """Keep the sentences `keep` (B'',), whose beam rows are `flat_keep` (B''*K,)."""
        return Beams(
            self.rows[keep],
            self.max_lens[keep],
            self.min_lens[keep],
            self.scores[keep],
            self.tokens[flat_keep],
            None if self.attention is None else self.attention[flat_keep],
            None if self.coverage is None else self.coverage[flat_keep],
            self.top_finished[keep],
        )

    def live_rows(self) -> Tensor:
        """(R,) rows of the beams still open. A beam is closed (score -inf) at the first
        step but for beam 0, and for one step after its slot got a candidate that ended in
        EOS or none at all (fewer than K allowed extensions)."""
        return self.scores.view(-1).isfinite().nonzero().squeeze(1)

    def too_short(self) -> Tensor:
        """(B'*K,) whether each beam row must not end yet."""
        return (self.tokens.size(1) < self.min_lens).repeat_interleave(self.scores.size(1))

    def note_finished(self, scores: Tensor) -> None:
        """Merge (B', C) normalized scores just finished (-inf: none) into `top_finished`."""
        merged = torch.cat([self.top_finished, scores], dim=1)  # (B', N+C)
        self.top_finished = merged.topk(self.top_finished.size(1), dim=1).values

    def can_improve(self, scoring: Scoring) -> Tensor:
        """(B',) whether some live beam could still beat the nbest-th finished hypothesis.

        A live beam's log-prob s <= 0 can only fall as it grows, to s' <= s at a final
        length L <= max_len; lp is positive and nondecreasing in L and the coverage
        penalty at most 0, so its final score is at most s / lp(max_len). Dead beams
        (-inf) never improve.
        """
        best_live = self.scores.max(dim=1).values  # (B',)
        return best_live / scoring.penalties[self.max_lens] > self.top_finished[:, -1]


class Candidates(NamedTuple):
    """Extensions of the beams of each sentence, best first."""

    scores: Tensor  # (B', K) sums of log-probs
    beams: Tensor  # (B', K) beam extended
    tokens: Tensor  # (B', K) token appended


class Finished(NamedTuple):
    """Complete hypotheses, all of one length, of any sentences."""

    rows: Tensor  # (N,) sentence of each
    tokens: Tensor  # (N, t) without EOS
    log_probs: Tensor  # (N,) sums of log-probs
    scores: Tensor  # (N,) normalized
    attention: Tensor | None  # (N, t + ended, S)


def top_candidates(scores: Tensor, log_probs: Tensor, live: Tensor) -> Candidates:
    """(B', K) beam scores and (R, V) log-probs of the open beams, rows `live` (R,) of the
    B'*K -> the K best extensions of each sentence (closed beams have none: -inf).

    The K best of a sentence's K * V extensions are among the k = min(K, V) best of each
    beam's own V, so those are found first: the sum is (B', K, k), not (B', K, V).
    """
    batch, beam_size = scores.shape
    per_beam = min(beam_size, log_probs.size(1))  # k
    live_lp, live_token = log_probs.topk(per_beam, dim=1)  # (R, k)
    token_lp = live_lp.new_full((batch * beam_size, per_beam), -math.inf)  # (B'*K, k)
    token_lp.index_copy_(0, live, live_lp)  # closed rows keep -inf, and a dummy token 0
    token = live_token.new_zeros((batch * beam_size, per_beam)).index_copy_(0, live, live_token)
    total = scores.unsqueeze(2) + token_lp.view(batch, beam_size, per_beam)  # (B', K, k)
    top, index = total.view(batch, -1).topk(beam_size, dim=1)  # (B', K)
    tokens = token.view(batch, -1).gather(1, index)  # (B', K)
    return Candidates(top, index // per_beam, tokens)


def without_eos(candidates: Candidates, eos_id: int) -> Candidates:
    """The candidates with those ending in EOS (finished now) made dead: score -inf."""
    scores = candidates.scores.masked_fill(candidates.tokens == eos_id, -math.inf)
    return candidates._replace(scores=scores)


def flat_rows(sentences: Tensor, beams: Tensor, beam_size: int) -> Tensor:
    """(N,) sentence rows and (N, K) or (K,) beams -> (N*K,) rows of (B'*K, ...) tensors."""
    return (sentences.unsqueeze(1) * beam_size + beams).view(-1)


def _attention_so_far(past: Tensor | None, weights: Tensor | None, flat: Tensor) -> Tensor | None:
    """Rows `flat` (N,) of the (B'*K, t, S) attention so far, with this step's (B'*K, S)
    weights appended -> (N, t+1, S); None when the model gives no attention."""
    if weights is None:
        return None
    now = weights[flat].unsqueeze(1)  # (N, 1, S)
    return now if past is None else torch.cat([past[flat], now], dim=1)


def collect_eos(
    beams: Beams,
    candidates: Candidates,
    weights: Tensor | None,
    covered: Tensor | None,
    eos_id: int,
    scoring: Scoring,
) -> tuple[Finished, Tensor]:
    """The candidates that end in EOS, finished, and (B', K) their normalized scores, else
    -inf. `covered` (B'*K, S): each beam row's coverage with this step's attention added."""
    batch, beam_size = beams.scores.shape
    scores = candidates.scores  # (B', K)
    ended = (candidates.tokens == eos_id) & scores.isfinite()  # (B', K)
    sentence, rank = ended.nonzero(as_tuple=True)  # (N,)
    flat = sentence * beam_size + candidates.beams[sentence, rank]  # (N,) rows of beams.tokens
    coverage = None if covered is None else covered[flat]  # (N, S)
    ended_scores = scoring(scores[sentence, rank], beams.tokens.size(1) + 1, coverage)  # (N,)
    normalized = scores.new_full((batch, beam_size), -math.inf)
    normalized[sentence, rank] = ended_scores
    finished = Finished(
        beams.rows[sentence],
        beams.tokens[flat],
        scores[sentence, rank],
        ended_scores,
        _attention_so_far(beams.attention, weights, flat),
    )
    return finished, normalized


def extend(
    beams: Beams, live: Candidates, weights: Tensor | None, covered: Tensor | None
) -> tuple[Beams, Tensor]:
    """Continue with the live candidates; -> new beams and (B'*K,) old row of each new row.
    `covered` as in `collect_eos`."""
    batch, beam_size = beams.scores.shape
    sentences = torch.arange(batch, device=live.beams.device)  # (B',)
    reorder = flat_rows(sentences, live.beams, beam_size)  # (B'*K,)
    tokens = torch.cat([beams.tokens[reorder], live.tokens.view(-1, 1)], dim=1)  # (B'*K, t+1)
    attention = _attention_so_far(beams.attention, weights, reorder)  # (B'*K, t+1, S)
    coverage = None if covered is None else covered[reorder]  # (B'*K, S)
    extended = replace(
        beams, scores=live.scores, tokens=tokens, attention=attention, coverage=coverage
    )
    return extended, reorder


def collect_at_max_length(beams: Beams, scoring: Scoring) -> tuple[Finished, Tensor]:
    """The live beams of sentences at their max length, finished unended, and (B',) those
    sentences."""
    length = beams.tokens.size(1)
    at_max = length >= beams.max_lens  # (B',)
    take = at_max.unsqueeze(1) & beams.scores.isfinite()  # (B', K)
    sentence = take.nonzero(as_tuple=True)[0]  # (N,)
    flat = take.view(-1).nonzero().squeeze(1)  # (N,)
    scores = beams.scores[take]  # (N,)
    attention = None if beams.attention is None else beams.attention[flat]  # (N, t, S)
    coverage = None if beams.coverage is None else beams.coverage[flat]  # (N, S)
    normalized = scoring(scores, length, coverage)
    return Finished(beams.rows[sentence], beams.tokens[flat], scores, normalized, attention), at_max
