"""Greedy and beam search, on a fake model whose log-probs come from fixed random tables."""

import math
from operator import itemgetter
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor

from seq2seq.search import Hypothesis, beam_search, greedy_search
from seq2seq.search_rules import at_length_limit, max_output_lengths

PAD, BOS, EOS = 0, 1, 2


class FakeMemory(NamedTuple):
    lengths: Tensor  # (B,)
    first: Tensor  # (B,) first source token

    def index_select(self, index: Tensor) -> "FakeMemory":
        return FakeMemory(self.lengths[index], self.first[index])


class FakeState(NamedTuple):
    step: Tensor  # (B,)

    def index_select(self, index: Tensor) -> "FakeState":
        return FakeState(self.step[index])


class TableModel:
    """Log-probs of the next token from the previous token, the step and the source.

    Each sentence is searched independently of its batch and padding, so search
    results must not depend on either. Records the batch size of every step.
    """

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(
        self,
        vocab_size: int = 6,
        *,
        seed: int = 0,
        eos_bias: float = 0.0,
        special_bias: float = 0.0,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.by_prev = 2 * torch.randn(vocab_size, vocab_size, generator=gen)  # (V, V)
        self.by_step = torch.randn(64, vocab_size, generator=gen)  # (steps, V)
        self.by_length = torch.randn(32, vocab_size, generator=gen)  # (S, V)
        self.by_first = torch.randn(vocab_size, vocab_size, generator=gen)  # (V, V)
        self.by_step[:, EOS] += eos_bias
        self.by_step[:, [PAD, BOS]] += special_bias
        self.batch_sizes: list[int] = []
        self.scored_rows: list[int] = []

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[FakeMemory, FakeState]:
        return FakeMemory(src_lengths.clone(), src[:, 0]), FakeState(torch.zeros_like(src_lengths))

    def decode_step(
        self, memory: FakeMemory, state: FakeState, prev_tokens: Tensor
    ) -> tuple[Tensor, FakeState, None]:
        self.batch_sizes.append(prev_tokens.numel())
        beams = prev_tokens.numel() // memory.lengths.numel()  # K rows per memory row
        logits = (
            self.by_prev[prev_tokens]
            + self.by_step[state.step]
            + self.by_length[memory.lengths.repeat_interleave(beams)]
            + self.by_first[memory.first.repeat_interleave(beams)]
        )  # (B*K, V)
        return logits, FakeState(state.step + 1), None

    def log_probs(self, outputs: Tensor) -> Tensor:
        self.scored_rows.append(outputs.size(0))
        return outputs.log_softmax(dim=-1)


def random_batch(lengths: list[int], vocab_size: int = 6) -> tuple[Tensor, Tensor]:
    """(B, S) padded source of non-special tokens and (B,) lengths."""
    src_lengths = torch.tensor(lengths)
    src = torch.randint(3, vocab_size, (len(lengths), max(lengths)))
    src[torch.arange(src.size(1)) >= src_lengths.unsqueeze(1)] = PAD
    return src, src_lengths


def penalty(length: int, kind: str, alpha: float) -> float:
    """lp(L), written out here independently of the search module."""
    return {"none": 1.0, "average": length**alpha, "gnmt": ((5 + length) / 6) ** alpha}[kind]


def repeated_ngram_bans(tokens: list[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram already in `tokens` (none for n=0)."""
    if n == 0:
        return set()
    context = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
    starts = range(len(tokens) - n + 1)
    return {tokens[i + n - 1] for i in starts if tuple(tokens[i : i + n - 1]) == context}


def has_repeated_ngram(tokens: list[int], n: int) -> bool:
    ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(ngrams)) < len(ngrams)


@torch.no_grad()
def teacher_force(
    model: Any, src: Tensor, src_length: int, tokens: list[int], ended: bool
) -> tuple[float, Tensor | None]:
    """Log-prob of `tokens` (then EOS if `ended`) for one (S,) source, teacher forced, and
    the (L, S) attention of each step (None if the model gives none)."""
    length = torch.tensor([src_length], device=src.device)
    memory, state = model.encode(src[:src_length].unsqueeze(0), length)
    total, prev, attention = 0.0, model.bos_id, []
    for token in tokens + [model.eos_id] * ended:
        prev_tokens = torch.tensor([prev], device=src.device)
        outputs, state, weights = model.decode_step(memory, state, prev_tokens)
        log_probs = model.log_probs(outputs)
        total += log_probs[0, token].item()
        if weights is not None:
            attention.append(weights[0])
        prev = token
    return total, torch.stack(attention) if attention else None


@torch.no_grad()
def reference_greedy(
    model: TableModel, src: Tensor, src_length: int, max_len: int, *, min_len: int, ngram: int
) -> list[int]:
    """Greedy search for one sentence, written plainly, with min length and n-gram ban."""
    memory, state = model.encode(src[:src_length].unsqueeze(0), torch.tensor([src_length]))
    content = set(range(3, model.by_prev.size(0)))
    tokens: list[int] = []
    while len(tokens) < max_len:
        prev = torch.tensor([tokens[-1] if tokens else BOS])
        outputs, state, _ = model.decode_step(memory, state, prev)
        log_probs = model.log_probs(outputs)
        allowed = content - repeated_ngram_bans(tokens, ngram)
        if len(tokens) >= min(min_len, max_len - 1) or not allowed:
            allowed.add(EOS)
        token = max(sorted(allowed), key=lambda t: log_probs[0, t].item())
        if token == EOS:
            break
        tokens.append(token)
    return tokens


def assert_nbest_list(hyps: list[Hypothesis], nbest: int) -> None:
    """At most `nbest` distinct outputs, best first."""
    assert 1 <= len(hyps) <= nbest
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == len(hyps)


def assert_hypothesis_valid(
    model: Any, src: Tensor, src_length: int, max_len: int, hyp: Hypothesis, rel: float
) -> None:
    """Tokens are valid, log-prob, score (average, alpha 1) and attention are the model's."""
    assert not {model.pad_id, model.bos_id, model.eos_id} & set(hyp.tokens)
    assert len(hyp.tokens) <= max_len
    ended = len(hyp.tokens) < max_len
    log_prob, attention = teacher_force(model, src, src_length, hyp.tokens, ended)
    assert hyp.log_prob == pytest.approx(log_prob, rel=rel)
    assert hyp.score == pytest.approx(log_prob / (len(hyp.tokens) + ended), rel=rel)
    if attention is None:
        assert hyp.attention is None
    else:
        assert hyp.attention is not None
        assert hyp.attention.shape == (len(hyp.tokens) + ended, src_length)
        torch.testing.assert_close(hyp.attention.sum(dim=1), torch.ones(len(attention)))
        torch.testing.assert_close(hyp.attention, attention, rtol=1e-4, atol=1e-6)


def assert_same_hypotheses(found: list[Hypothesis], expected: list[Hypothesis]) -> None:
    """Same tokens, scores to 1e-5 and attention."""
    assert [h.tokens for h in found] == [h.tokens for h in expected]
    assert [h.score for h in found] == pytest.approx([h.score for h in expected], rel=1e-5)
    assert [h.log_prob for h in found] == pytest.approx([h.log_prob for h in expected], rel=1e-5)
    for hyp, other in zip(found, expected, strict=True):
        if other.attention is None:
            assert hyp.attention is None
        else:
            torch.testing.assert_close(hyp.attention, other.attention, rtol=1e-5, atol=1e-6)


def assert_search_consistent(
    model: Any,
    src: Tensor,
    src_lengths: Tensor,
    *,
    beam_size: int = 3,
    nbest: int = 2,
    max_len_a: float = 1.5,
    max_len_b: int = 4,
    rel: float = 1e-5,
    **constraints: int,
) -> None:
    """Checks any model: beam 1 is greedy, every hypothesis is valid and the model's, n-best
    lists are sorted and distinct, and each sentence gives the same result alone as in the
    (padded) batch."""
    options: dict[str, Any] = dict(max_len_a=max_len_a, max_len_b=max_len_b, **constraints)
    options["return_attention"] = True
    beam_options = dict(beam_size=beam_size, nbest=nbest, **options)
    greedy = greedy_search(model, src, src_lengths, **options)
    beam1 = [hyps[0] for hyps in beam_search(model, src, src_lengths, beam_size=1, **options)]
    beam = beam_search(model, src, src_lengths, **beam_options)
    assert [h.tokens for h in beam1] == [h.tokens for h in greedy]
    assert [h.score for h in beam1] == pytest.approx([h.score for h in greedy], rel=rel)
    max_lens = max_output_lengths(src_lengths, max_len_a, max_len_b).tolist()
    for i, (n, max_len) in enumerate(zip(src_lengths.tolist(), max_lens, strict=True)):
        alone = src[i : i + 1, :n], src_lengths[i : i + 1]
        assert_nbest_list(beam[i], nbest)
        for hyp in [greedy[i], *beam[i]]:
            assert_hypothesis_valid(model, src[i], n, max_len, hyp, rel)
        assert_same_hypotheses(greedy_search(model, *alone, **options), [greedy[i]])
        assert_same_hypotheses(beam_search(model, *alone, **beam_options)[0], beam[i])


def all_outputs(
    model: TableModel, src: Tensor, src_length: int, max_len: int
) -> list[tuple[list[int], bool, float]]:
    """Every output of at most `max_len` steps: (tokens, ended in EOS, log-prob)."""
    memory, state = model.encode(src[:src_length].unsqueeze(0), torch.tensor([src_length]))
    content = list(range(3, model.by_prev.size(0)))
    outputs: list[tuple[list[int], bool, float]] = []

    def visit(prefix: list[int], log_prob: float, state: FakeState) -> None:
        if len(prefix) == max_len:
            outputs.append((prefix, False, log_prob))
            return
        prev = torch.tensor([prefix[-1] if prefix else BOS])
        step_outputs, state, _ = model.decode_step(memory, state, prev)
        log_probs = model.log_probs(step_outputs)
        outputs.append((prefix, True, log_prob + log_probs[0, EOS].item()))
        for token in content:
            visit([*prefix, token], log_prob + log_probs[0, token].item(), state)

    visit([], 0.0, state)
    return outputs


def exhaustive_nbest(
    model: TableModel, src: Tensor, src_length: int, max_len: int, kind: str, alpha: float, n: int
) -> list[tuple[list[int], float, float]]:
    """The `n` best of all outputs of at most `max_len` steps: (tokens, score, log-prob)."""
    scored = [
        (tokens, log_prob / penalty(len(tokens) + ended, kind, alpha), log_prob)
        for tokens, ended, log_prob in all_outputs(model, src, src_length, max_len)
    ]
    return sorted(scored, key=itemgetter(1), reverse=True)[:n]


PENALTIES = [("none", 1.0), ("average", 0.0), ("average", 1.0), ("gnmt", 0.6), ("gnmt", 1.0)]


def test_max_output_lengths() -> None:
    lengths = max_output_lengths(torch.tensor([0, 1, 3, 10]), 1.5, 2)
    assert lengths.tolist() == [2, 3, 6, 17]
    assert max_output_lengths(torch.tensor([0, 4]), 0.0, 0).tolist() == [1, 1]


@pytest.mark.parametrize("constraints", [{}, {"min_len": 3, "no_repeat_ngram": 2}])
@pytest.mark.parametrize("seed", range(3))
def test_search_consistent_on_table_model(seed: int, constraints: dict[str, int]) -> None:
    model = TableModel(seed=seed, eos_bias=1.0)
    assert_search_consistent(model, *random_batch([3, 1, 7, 4, 2]), **constraints)


@pytest.mark.parametrize("eos_bias", [-2.0, 0.0, 2.0])
def test_greedy_equals_beam_size_one(eos_bias: float) -> None:
    model = TableModel(seed=1, eos_bias=eos_bias)
    src, src_lengths = random_batch([5, 2, 8, 1, 6, 3])
    for kind, alpha in PENALTIES:
        for constraints in [{}, {"min_len": 4}, {"no_repeat_ngram": 2}]:
            options = dict(length_penalty=kind, alpha=alpha, **constraints)
            greedy = greedy_search(model, src, src_lengths, **options)
            beam = beam_search(model, src, src_lengths, beam_size=1, **options)
            assert [hyps[0] for hyps in beam] == greedy
            assert all(len(hyps) == 1 for hyps in beam)


@pytest.mark.parametrize(("kind", "alpha"), PENALTIES)
def test_wide_beam_equals_exhaustive_search(kind: str, alpha: float) -> None:
    # V=6 leaves 3 output tokens; with max length 4 at most 27 * 4 candidates are
    # finite at any step, so a beam of 128 keeps every prefix. With this seed the four
    # distinct penalties ("average" with alpha 0 is "none") give four different lists.
    model = TableModel(seed=5)
    src, src_lengths = random_batch([1, 3, 2])
    found = beam_search(
        model,
        src,
        src_lengths,
        beam_size=128,
        nbest=3,
        length_penalty=kind,
        alpha=alpha,
        max_len_a=0.0,
        max_len_b=4,
    )
    for i, hyps in enumerate(found):
        best = exhaustive_nbest(model, src[i], int(src_lengths[i]), 4, kind, alpha, n=3)
        assert [h.tokens for h in hyps] == [tokens for tokens, _, _ in best]
        assert [h.score for h in hyps] == pytest.approx([score for _, score, _ in best], rel=1e-5)
        assert [h.log_prob for h in hyps] == pytest.approx([lp for _, _, lp in best], rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_beam_scores_at_least_greedy(seed: int) -> None:
    model = TableModel(vocab_size=12, seed=seed)
    src, src_lengths = random_batch(list(range(1, 9)), vocab_size=12)
    greedy = greedy_search(model, src, src_lengths, length_penalty="none")
    beam = [
        hyps[0] for hyps in beam_search(model, src, src_lengths, beam_size=4, length_penalty="none")
    ]
    for beam_hyp, greedy_hyp in zip(beam, greedy, strict=True):
        assert beam_hyp.score >= greedy_hyp.score - 1e-6
    assert any(b.score > g.score + 1e-3 for b, g in zip(beam, greedy, strict=True))


def test_nbest_lists_are_sorted_distinct_and_keep_the_best() -> None:
    model = TableModel(vocab_size=12, seed=9)
    src, src_lengths = random_batch([1, 4, 2, 6, 3], vocab_size=12)
    one = beam_search(model, src, src_lengths, beam_size=6, nbest=1)
    six = beam_search(model, src, src_lengths, beam_size=6, nbest=6)
    for hyps in six:
        assert len(hyps) == 6
        assert_nbest_list(hyps, 6)
    assert [hyps[0] for hyps in six] == [hyps[0] for hyps in one]


def test_nbest_waits_for_the_nth_finished() -> None:
    # EOS is so likely that the best output is empty, found at step 1; with nbest=2
    # the search goes on until a second one is found and no live beam can beat it.
    model = TableModel(seed=7, eos_bias=8.0)
    src, src_lengths = random_batch([3])
    options: dict[str, Any] = dict(length_penalty="none", max_len_a=0.0, max_len_b=4)
    found = beam_search(model, src, src_lengths, beam_size=3, nbest=2, **options)
    assert model.batch_sizes == [3, 3]
    best = exhaustive_nbest(model, src[0], 3, 4, "none", 1.0, n=2)
    assert [h.tokens for h in found[0]] == [tokens for tokens, _, _ in best]
    assert found[0][0].tokens == []


def test_same_result_alone_and_in_batch() -> None:
    model = TableModel(seed=3)
    src, src_lengths = random_batch([6, 1, 4, 9, 2, 7, 3])
    for search, kwargs in [(greedy_search, {}), (beam_search, {"beam_size": 4, "nbest": 2})]:
        batched = search(model, src, src_lengths, **kwargs)
        for i, n in enumerate(src_lengths.tolist()):
            assert search(model, src[i : i + 1, :n], src_lengths[i : i + 1], **kwargs) == [
                batched[i]
            ]


@pytest.mark.parametrize("beam_size", [None, 1, 3])
def test_without_eos_output_stops_at_max_length(beam_size: int | None) -> None:
    model = TableModel(seed=4, eos_bias=-math.inf)
    src, src_lengths = random_batch([1, 2, 3, 5])
    if beam_size is None:
        found = greedy_search(model, src, src_lengths, max_len_a=1.5, max_len_b=2)
    else:
        found = [
            hyps[0]
            for hyps in beam_search(
                model, src, src_lengths, beam_size=beam_size, max_len_a=1.5, max_len_b=2
            )
        ]
    assert [len(h.tokens) for h in found] == [3, 5, 6, 9]
    lengths = [len(h.tokens) for h in found]
    assert at_length_limit(lengths, src_lengths, 1.5, 2) == [True] * 4
    assert at_length_limit(lengths, src_lengths, 1.5, 3) == [False] * 4  # EOS would fit


def search_all(
    model: Any, src: Tensor, src_lengths: Tensor, beam_size: int | None, **kwargs: Any
) -> list[Hypothesis]:
    """Greedy's hypotheses (beam_size None), or all those of beam search's n-best lists."""
    if beam_size is None:
        return greedy_search(model, src, src_lengths, **kwargs)
    found = beam_search(model, src, src_lengths, beam_size=beam_size, nbest=beam_size, **kwargs)
    return [hyp for hyps in found for hyp in hyps]


@pytest.mark.parametrize("beam_size", [None, 1, 4])
def test_never_outputs_special_tokens(beam_size: int | None) -> None:
    # The model prefers padding and BOS; search must not emit them.
    model = TableModel(seed=5, special_bias=5.0)
    found = search_all(model, *random_batch([4, 2, 6, 1]), beam_size)
    assert all(not {PAD, BOS, EOS} & set(h.tokens) for h in found)
    assert any(h.tokens for h in found)


def repeating_model() -> TableModel:
    """A model that strongly prefers repeating its previous token and rarely ends."""
    model = TableModel(seed=8, eos_bias=-3.0)
    model.by_prev += 10 * torch.eye(model.by_prev.size(0))
    return model


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram(n: int) -> None:
    model = repeating_model()
    src, src_lengths = random_batch([2, 4, 6])
    options: dict[str, Any] = dict(max_len_a=1.0, max_len_b=6)
    assert all(
        has_repeated_ngram(h.tokens, n) for h in greedy_search(model, src, src_lengths, **options)
    )
    greedy = greedy_search(model, src, src_lengths, no_repeat_ngram=n, **options)
    max_lens = max_output_lengths(src_lengths, 1.0, 6).tolist()
    for i, (hyp, max_len) in enumerate(zip(greedy, max_lens, strict=True)):
        expected = reference_greedy(model, src[i], int(src_lengths[i]), max_len, min_len=0, ngram=n)
        assert hyp.tokens == expected
    for beam_size in (None, 1, 3):
        found = search_all(model, src, src_lengths, beam_size, no_repeat_ngram=n, **options)
        assert not any(has_repeated_ngram(h.tokens, n) for h in found)
        assert all(h.tokens for h in found)


@pytest.mark.parametrize("beam_size", [None, 1, 3])
def test_min_length(beam_size: int | None) -> None:
    model = TableModel(seed=10, eos_bias=10.0)
    src, src_lengths = random_batch([1, 2, 5])
    options: dict[str, Any] = dict(max_len_a=1.0, max_len_b=1)  # max lengths 2, 3, 6
    assert all(h.tokens == [] for h in greedy_search(model, src, src_lengths, **options))
    found = search_all(model, src, src_lengths, beam_size, min_len=4, **options)
    per_sentence = beam_size or 1  # greedy: 1; beam: an n-best list of beam_size
    assert len(found) == 3 * per_sentence
    for i, hyp in enumerate(found):
        max_len = (2, 3, 6)[i // per_sentence]
        assert min(4, max_len - 1) <= len(hyp.tokens) <= max_len
    if beam_size is None:
        assert [len(h.tokens) for h in found] == [1, 2, 4]  # EOS as soon as allowed
        for i, (hyp, max_len) in enumerate(zip(found, (2, 3, 6), strict=True)):
            n = int(src_lengths[i])
            assert hyp.tokens == reference_greedy(model, src[i], n, max_len, min_len=4, ngram=0)


@pytest.mark.parametrize("beam_size", [None, 1, 3])
def test_constraints_that_leave_only_eos_end_the_output(beam_size: int | None) -> None:
    # No token may repeat and only 3 exist, so EOS must come before min_len: the output
    # ends short rather than with a banned or special token.
    model = TableModel(seed=11, eos_bias=-2.0)
    src, src_lengths = random_batch([3, 5])
    found = search_all(model, src, src_lengths, beam_size, min_len=8, no_repeat_ngram=1)
    assert len(found) == 2 * (beam_size or 1)
    for hyp in found:
        assert len(hyp.tokens) == len(set(hyp.tokens)) == 3
        assert not {PAD, BOS, EOS} & set(hyp.tokens)
        assert math.isfinite(hyp.score)


def test_finished_sentences_leave_the_batch() -> None:
    model = TableModel(seed=6, eos_bias=-math.inf)
    src, src_lengths = random_batch([1, 4])  # max lengths 1 and 4
    greedy_search(model, src, src_lengths, max_len_a=1.0, max_len_b=0)
    assert model.batch_sizes == model.scored_rows == [2, 1, 1, 1]
    model.batch_sizes.clear()
    model.scored_rows.clear()
    beam_search(model, src, src_lengths, beam_size=3, max_len_a=1.0, max_len_b=0)
    assert model.batch_sizes == [6, 3, 3, 3]
    assert model.scored_rows == [2, 3, 3, 3]  # at first, beam 0 of each sentence alone


def test_closed_beams_are_not_scored() -> None:
    """Only beam 0 is open at the first step; a slot whose candidate ended in EOS stays
    closed for one step, until the open beams refill the K slots."""
    #          PAD   BOS   EOS   a     b     c
    first = [1e-9, 1e-9, 0.40, 0.30, 0.20, 0.10]
    later = [1e-9, 1e-9, 0.01, 0.33, 0.33, 0.33]
    model = step_model([first, later])
    src, src_lengths = random_batch([3])
    beam_search(model, src, src_lengths, beam_size=3, max_len_a=1.0, max_len_b=0)
    assert model.batch_sizes == [3, 3, 3]
    assert model.scored_rows == [1, 2, 3]


def test_beam_stops_when_no_live_beam_can_win() -> None:
    # EOS is so likely that the best hypothesis ends at step 1; with no length penalty
    # no live beam (whose score can only fall) can beat it, so no step may follow.
    model = TableModel(seed=7, eos_bias=8.0)
    found = beam_search(model, *random_batch([3]), beam_size=2, length_penalty="none")
    assert model.batch_sizes == [2]
    assert found[0][0].tokens == []


def step_model(probabilities: list[list[float]], steps: int = 64) -> TableModel:
    """A model whose next-token distribution depends on the step only (last row repeats)."""
    model = TableModel(vocab_size=len(probabilities[0]))
    for table in (model.by_prev, model.by_length, model.by_first):
        table.zero_()
    rows = torch.tensor(probabilities).log()
    model.by_step = torch.cat([rows, rows[-1:].expand(steps - len(rows), -1)])
    return model


@pytest.mark.parametrize(("kind", "alpha"), PENALTIES)
def test_finished_junk_does_not_stop_the_search(kind: str, alpha: float) -> None:
    """Early EOS candidates rank among the top K and finish K poor hypotheses while
    the best beam is still open: the search must go on until that beam can't win."""
    #          PAD   BOS   EOS   a     b     c
    early = [1e-9, 1e-9, 0.17, 0.80, 0.02, 0.01]
    late = [1e-9, 1e-9, 0.97, 0.01, 0.01, 0.01]
    model = step_model([early] * 4 + [late])
    src, src_lengths = random_batch([4])
    options: dict[str, Any] = dict(length_penalty=kind, alpha=alpha, max_len_a=1.0, max_len_b=2)
    found = beam_search(model, src, src_lengths, beam_size=3, nbest=2, **options)
    best = exhaustive_nbest(model, src[0], 4, 6, kind, alpha, n=2)
    assert [h.tokens for h in found[0]] == [tokens for tokens, _, _ in best]
    assert found[0][0].tokens == [3, 3, 3, 3]
    assert found[0][0].log_prob == pytest.approx(4 * math.log(0.80) + math.log(0.97), rel=1e-4)


@pytest.mark.parametrize(("kind", "alpha"), PENALTIES)
def test_long_output_may_overtake_a_finished_short_one(kind: str, alpha: float) -> None:
    """A live beam scoring below the finished empty output may still win once it is
    long: the search may stop only by the bound at the max length."""
    #          PAD   BOS   EOS    a      b      c
    first = [1e-9, 1e-9, 0.50, 0.45, 0.03, 0.02]
    middle = [1e-9, 1e-9, 0.005, 0.99, 0.003, 0.002]
    last = [1e-9, 1e-9, 0.97, 0.01, 0.01, 0.01]
    model = step_model([first] + [middle] * 3 + [last])
    src, src_lengths = random_batch([4])
    options: dict[str, Any] = dict(length_penalty=kind, alpha=alpha, max_len_a=1.0, max_len_b=2)
    found = beam_search(model, src, src_lengths, beam_size=2, **options)
    best = exhaustive_nbest(model, src[0], 4, 6, kind, alpha, n=1)
    assert found[0][0].tokens == best[0][0]
    assert found[0][0].tokens == ([] if alpha == 0 or kind == "none" else [3, 3, 3, 3])


def test_invalid_options_raise() -> None:
    model, (src, src_lengths) = TableModel(), random_batch([2])
    for kwargs in [{"beam_size": 0}, {"nbest": 0}, {"beam_size": 2, "nbest": 3}]:
        with pytest.raises(ValueError, match="beam_size"):
            beam_search(model, src, src_lengths, **kwargs)
    for search in (greedy_search, beam_search):
        for kwargs, match in [
            ({"alpha": -0.5}, "alpha"),
            ({"length_penalty": "wu"}, "length_penalty"),
            ({"min_len": -1}, "min_len"),
            ({"no_repeat_ngram": -2}, "no_repeat_ngram"),
        ]:
            with pytest.raises(ValueError, match=match):
                search(model, src, src_lengths, **kwargs)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong"])
def test_search_consistent_on_the_real_model(cell: str, attention: str) -> None:
    from seq2seq.model import Seq2Seq

    model = Seq2Seq(9, 11, cell=cell, attention=attention, embed_dim=8, hidden_size=8, dropout=0.0)
    src, src_lengths = random_batch([5, 2, 7, 3], vocab_size=9)
    for constraints in [{}, {"min_len": 3, "no_repeat_ngram": 2}]:
        assert_search_consistent(
            model.eval(), src, src_lengths, max_len_a=1.0, max_len_b=3, rel=1e-4, **constraints
        )


def test_attention_only_on_request() -> None:
    from seq2seq.model import Seq2Seq

    model = Seq2Seq(9, 11, embed_dim=8, hidden_size=8, dropout=0.0).eval()
    src, src_lengths = random_batch([5, 2], vocab_size=9)
    plain = beam_search(model, src, src_lengths, beam_size=3)
    with_attention = beam_search(model, src, src_lengths, beam_size=3, return_attention=True)
    assert all(h.attention is None for h in greedy_search(model, src, src_lengths))
    assert all(hyps[0].attention is None for hyps in plain)
    assert all(hyps[0].attention is not None for hyps in with_attention)
    assert [h[0].tokens for h in plain] == [h[0].tokens for h in with_attention]


# -- the coverage penalty (Wu et al., 2016) -------------------------------------------------


class AttendedMemory(NamedTuple):
    lengths: Tensor  # (B,)
    first: Tensor  # (B,) first source token
    width: int  # S, the padded source length

    def index_select(self, index: Tensor) -> "AttendedMemory":
        return AttendedMemory(self.lengths[index], self.first[index], self.width)


class AttendingModel(TableModel):
    """TableModel with attention over the true source, from a table too (by the previous
    token and the step): independent of batch and padding like its log-probs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        gen = torch.Generator().manual_seed(7)
        vocab_size = self.by_prev.size(0)
        self.by_attention = 3 * torch.randn(vocab_size, 64, 32, generator=gen)  # (V, steps, S)

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[AttendedMemory, FakeState]:
        memory, state = super().encode(src, src_lengths)
        return AttendedMemory(memory.lengths, memory.first, src.size(1)), state

    def decode_step(
        self, memory: AttendedMemory, state: FakeState, prev_tokens: Tensor
    ) -> tuple[Tensor, FakeState, Tensor]:
        logits, next_state, _ = super().decode_step(memory, state, prev_tokens)
        beams = prev_tokens.numel() // memory.lengths.numel()
        lengths = memory.lengths.repeat_interleave(beams)  # (N,)
        scores = self.by_attention[prev_tokens, state.step, : memory.width]  # (N, S)
        padding = torch.arange(memory.width) >= lengths.unsqueeze(1)  # (N, S)
        return logits, next_state, scores.masked_fill(padding, -math.inf).softmax(dim=1)


def coverage_score(attention: Tensor, beta: float) -> float:
    """beta * sum over source tokens of log(min(attention received, 1)), in plain Python."""
    received = [sum(row[i] for row in attention.tolist()) for i in range(attention.size(1))]
    return beta * sum(math.log(min(total, 1.0)) for total in received)


def exhaustive_with_coverage(
    model: AttendingModel, src: Tensor, n: int, max_len: int, kind: str, beta: float, best: int
) -> list[tuple[list[int], float]]:
    """The `best` best outputs of at most `max_len` steps by log_prob / lp + coverage penalty,
    each output's attention from teacher forcing: (tokens, score)."""
    scored = []
    for tokens, ended, log_prob in all_outputs(model, src, n, max_len):
        _, attention = teacher_force(model, src, n, tokens, ended)
        lp = penalty(len(tokens) + ended, kind, 1.0)
        scored.append((tokens, log_prob / lp + coverage_score(attention, beta)))
    return sorted(scored, key=itemgetter(1), reverse=True)[:best]


@pytest.mark.parametrize("kind", ["average", "gnmt"])
def test_wide_beam_with_coverage_equals_exhaustive_search(kind: str) -> None:
    """As `test_wide_beam_equals_exhaustive_search`, ranked with the coverage penalty; with
    beta 2 the lists differ from beta 0's (the penalty changes the ranking)."""
    model = AttendingModel(seed=5)
    src, src_lengths = random_batch([1, 3, 2, 4])
    options = dict(beam_size=128, nbest=3, length_penalty=kind, max_len_a=0.0, max_len_b=4)
    lists = {}
    for beta in (0.0, 0.5, 2.0):
        found = beam_search(model, src, src_lengths, coverage_penalty="wu", beta=beta, **options)
        for i, hyps in enumerate(found):
            best = exhaustive_with_coverage(model, src[i], int(src_lengths[i]), 4, kind, beta, 3)
            assert [h.tokens for h in hyps] == [tokens for tokens, _ in best]
            assert [h.score for h in hyps] == pytest.approx([s for _, s in best], rel=1e-5)
        lists[beta] = [[h.tokens for h in hyps] for hyps in found]
    assert lists[2.0] != lists[0.0]


def test_coverage_greedy_equals_beam_size_one_and_batching_changes_nothing() -> None:
    model = AttendingModel(seed=2, eos_bias=1.0)
    src, src_lengths = random_batch([5, 2, 8, 1, 6, 3])
    options = dict(coverage_penalty="wu", beta=0.4, length_penalty="gnmt", alpha=0.6)
    greedy = greedy_search(model, src, src_lengths, **options)
    beam1 = beam_search(model, src, src_lengths, beam_size=1, **options)
    assert [hyps[0] for hyps in beam1] == greedy
    plain = greedy_search(model, src, src_lengths, length_penalty="gnmt", alpha=0.6)
    penalties = [h.score - p.score for h, p in zip(greedy, plain, strict=True)]  # cp <= 0
    assert max(penalties) <= 0 < -min(penalties)
    beam = beam_search(model, src, src_lengths, beam_size=3, nbest=2, **options)
    for i, n in enumerate(src_lengths.tolist()):
        alone = src[i : i + 1, :n], src_lengths[i : i + 1]
        assert_same_hypotheses(greedy_search(model, *alone, **options), [greedy[i]])
        assert_same_hypotheses(
            beam_search(model, *alone, beam_size=3, nbest=2, **options)[0], beam[i]
        )


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_coverage_scores_on_the_real_model(attention: str) -> None:
    """Each hypothesis's score is log_prob / L + the penalty of its own attention (EOS's
    row included), in a padded batch."""
    from seq2seq.model import Seq2Seq

    model = Seq2Seq(9, 11, attention=attention, embed_dim=8, hidden_size=8, dropout=0.0).eval()
    src, src_lengths = random_batch([5, 2, 7, 3], vocab_size=9)
    options = dict(coverage_penalty="wu", beta=0.3, return_attention=True)
    for hyps in beam_search(model, src, src_lengths, beam_size=3, nbest=3, **options):
        for hyp in hyps:
            length = hyp.attention.size(0)  # tokens, and EOS if it ended
            expected = hyp.log_prob / length + coverage_score(hyp.attention, 0.3)
            assert hyp.score == pytest.approx(expected, rel=1e-5)


def test_coverage_options_are_checked() -> None:
    src, src_lengths = random_batch([3, 2])
    for search in (greedy_search, beam_search):
        with pytest.raises(ValueError, match="needs a model with attention"):
            search(TableModel(), src, src_lengths, coverage_penalty="wu", beta=0.2)
        plain = search(TableModel(), src, src_lengths)
        assert search(TableModel(), src, src_lengths, coverage_penalty="wu", beta=0.0) == plain
        with pytest.raises(ValueError, match="coverage_penalty must be one of"):
            search(AttendingModel(), src, src_lengths, coverage_penalty="summary", beta=0.2)
        with pytest.raises(ValueError, match="beta must be at least 0"):
            search(AttendingModel(), src, src_lengths, coverage_penalty="wu", beta=-0.1)
