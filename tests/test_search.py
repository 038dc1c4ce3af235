"""Greedy and beam search, on a fake model whose log-probs come from fixed random tables."""

import itertools
import math
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor

from seq2seq.search import Hypothesis, beam_search, greedy_search, max_output_lengths

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

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[FakeMemory, FakeState]:
        return FakeMemory(src_lengths.clone(), src[:, 0]), FakeState(torch.zeros_like(src_lengths))

    def decode_step(
        self, memory: FakeMemory, state: FakeState, prev_tokens: Tensor
    ) -> tuple[Tensor, FakeState, None]:
        self.batch_sizes.append(prev_tokens.numel())
        logits = (
            self.by_prev[prev_tokens]
            + self.by_step[state.step]
            + self.by_length[memory.lengths]
            + self.by_first[memory.first]
        )  # (B, V)
        return logits.log_softmax(dim=-1), FakeState(state.step + 1), None


def random_batch(lengths: list[int], vocab_size: int = 6) -> tuple[Tensor, Tensor]:
    """(B, S) padded source of non-special tokens and (B,) lengths."""
    src_lengths = torch.tensor(lengths)
    src = torch.randint(3, vocab_size, (len(lengths), max(lengths)))
    src[torch.arange(src.size(1)) >= src_lengths.unsqueeze(1)] = PAD
    return src, src_lengths


@torch.no_grad()
def sequence_score(
    model: Any, src: Tensor, src_length: int, tokens: list[int], ended: bool
) -> float:
    """Log-prob of `tokens` (then EOS if `ended`) for one (S,) source, teacher forced."""
    length = torch.tensor([src_length], device=src.device)
    memory, state = model.encode(src[:src_length].unsqueeze(0), length)
    total, prev = 0.0, model.bos_id
    for token in tokens + [model.eos_id] * ended:
        prev_tokens = torch.tensor([prev], device=src.device)
        log_probs, state, _ = model.decode_step(memory, state, prev_tokens)
        total += log_probs[0, token].item()
        prev = token
    return total


def assert_search_consistent(
    model: Any,
    src: Tensor,
    src_lengths: Tensor,
    *,
    beam_size: int = 3,
    max_len_a: float = 1.5,
    max_len_b: int = 4,
    rel: float = 1e-5,
) -> None:
    """Checks any model: beam 1 is greedy, tokens and lengths are valid, scores are the
    model's, and each sentence gives the same result alone as in the batch."""
    lengths = dict(max_len_a=max_len_a, max_len_b=max_len_b)
    greedy = greedy_search(model, src, src_lengths, **lengths)
    beam1 = beam_search(model, src, src_lengths, beam_size=1, **lengths)
    beam = beam_search(model, src, src_lengths, beam_size=beam_size, **lengths)
    assert [h.tokens for h in beam1] == [h.tokens for h in greedy]
    assert [h.score for h in beam1] == pytest.approx([h.score for h in greedy], rel=rel)
    max_lens = max_output_lengths(src_lengths, max_len_a, max_len_b).tolist()
    for i, (n, max_len) in enumerate(zip(src_lengths.tolist(), max_lens, strict=True)):
        alone = src[i : i + 1, :n], src_lengths[i : i + 1]
        for hyp, alone_hyp in [
            (greedy[i], greedy_search(model, *alone, **lengths)[0]),
            (beam[i], beam_search(model, *alone, beam_size=beam_size, **lengths)[0]),
        ]:
            assert not {model.pad_id, model.bos_id, model.eos_id} & set(hyp.tokens)
            assert len(hyp.tokens) <= max_len
            ended = len(hyp.tokens) < max_len
            rescored = sequence_score(model, src[i], n, hyp.tokens, ended)
            assert hyp.score == pytest.approx(rescored, rel=rel)
            assert alone_hyp.tokens == hyp.tokens
            assert alone_hyp.score == pytest.approx(hyp.score, rel=rel)


def exhaustive_search(
    model: TableModel, src: Tensor, src_length: int, max_len: int, alpha: float
) -> Hypothesis:
    """The best of all outputs of at most `max_len` steps, by score / length**alpha."""
    content = [t for t in range(model.by_prev.size(0)) if t not in (PAD, BOS, EOS)]
    best, best_norm = Hypothesis([], -math.inf), -math.inf
    for n in range(max_len + 1):
        ended = n < max_len
        for tokens in itertools.product(content, repeat=n):
            score = sequence_score(model, src, src_length, list(tokens), ended)
            if score / (n + ended) ** alpha > best_norm:
                best, best_norm = Hypothesis(list(tokens), score), score / (n + ended) ** alpha
    return best


def test_max_output_lengths() -> None:
    lengths = max_output_lengths(torch.tensor([0, 1, 3, 10]), 1.5, 2)
    assert lengths.tolist() == [2, 3, 6, 17]
    assert max_output_lengths(torch.tensor([0, 4]), 0.0, 0).tolist() == [1, 1]


@pytest.mark.parametrize("seed", range(3))
def test_search_consistent_on_table_model(seed: int) -> None:
    model = TableModel(seed=seed, eos_bias=1.0)
    assert_search_consistent(model, *random_batch([3, 1, 7, 4, 2]))


@pytest.mark.parametrize("eos_bias", [-2.0, 0.0, 2.0])
def test_greedy_equals_beam_size_one(eos_bias: float) -> None:
    model = TableModel(seed=1, eos_bias=eos_bias)
    src, src_lengths = random_batch([5, 2, 8, 1, 6, 3])
    greedy = greedy_search(model, src, src_lengths)
    for alpha in (0.0, 1.0):
        assert beam_search(model, src, src_lengths, beam_size=1, alpha=alpha) == greedy


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_equals_exhaustive_search(alpha: float) -> None:
    # V=6 leaves 3 output tokens; with max length 4 at most 27 * 4 candidates are
    # finite at any step, so a beam of 128 keeps every prefix.
    model = TableModel(seed=2)
    src, src_lengths = random_batch([1, 3, 2])
    found = beam_search(
        model, src, src_lengths, beam_size=128, alpha=alpha, max_len_a=0.0, max_len_b=4
    )
    for i, hyp in enumerate(found):
        best = exhaustive_search(model, src[i], int(src_lengths[i]), max_len=4, alpha=alpha)
        assert hyp.tokens == best.tokens
        assert hyp.score == pytest.approx(best.score, rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_beam_scores_at_least_greedy(seed: int) -> None:
    model = TableModel(vocab_size=12, seed=seed)
    src, src_lengths = random_batch(list(range(1, 9)), vocab_size=12)
    greedy = greedy_search(model, src, src_lengths)
    beam = beam_search(model, src, src_lengths, beam_size=4, alpha=0.0)
    for beam_hyp, greedy_hyp in zip(beam, greedy, strict=True):
        assert beam_hyp.score >= greedy_hyp.score - 1e-6
    assert any(b.score > g.score + 1e-3 for b, g in zip(beam, greedy, strict=True))


def test_same_result_alone_and_in_batch() -> None:
    model = TableModel(seed=3)
    src, src_lengths = random_batch([6, 1, 4, 9, 2, 7, 3])
    for search, kwargs in [(greedy_search, {}), (beam_search, {"beam_size": 4})]:
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
        found = beam_search(
            model, src, src_lengths, beam_size=beam_size, max_len_a=1.5, max_len_b=2
        )
    assert [len(h.tokens) for h in found] == [3, 5, 6, 9]


@pytest.mark.parametrize("beam_size", [None, 1, 4])
def test_never_outputs_special_tokens(beam_size: int | None) -> None:
    # The model prefers padding and BOS; search must not emit them.
    model = TableModel(seed=5, special_bias=5.0)
    src, src_lengths = random_batch([4, 2, 6, 1])
    if beam_size is None:
        found = greedy_search(model, src, src_lengths)
    else:
        found = beam_search(model, src, src_lengths, beam_size=beam_size)
    assert all(not {PAD, BOS, EOS} & set(h.tokens) for h in found)
    assert any(h.tokens for h in found)


def test_finished_sentences_leave_the_batch() -> None:
    model = TableModel(seed=6, eos_bias=-math.inf)
    src, src_lengths = random_batch([1, 4])  # max lengths 1 and 4
    greedy_search(model, src, src_lengths, max_len_a=1.0, max_len_b=0)
    assert model.batch_sizes == [2, 1, 1, 1]
    model.batch_sizes.clear()
    beam_search(model, src, src_lengths, beam_size=3, max_len_a=1.0, max_len_b=0)
    assert model.batch_sizes == [6, 3, 3, 3]


def test_beam_stops_when_no_live_beam_can_win() -> None:
    # EOS is so likely that the best hypothesis ends at step 1; with alpha=0 no
    # live beam (whose score can only fall) can beat it, so no step may follow.
    model = TableModel(seed=7, eos_bias=8.0)
    found = beam_search(model, *random_batch([3]), beam_size=2, alpha=0.0)
    assert model.batch_sizes == [2]
    assert found[0].tokens == []


def step_model(probabilities: list[list[float]], steps: int = 64) -> TableModel:
    """A model whose next-token distribution depends on the step only (last row repeats)."""
    model = TableModel(vocab_size=len(probabilities[0]))
    for table in (model.by_prev, model.by_length, model.by_first):
        table.zero_()
    rows = torch.tensor(probabilities).log()
    model.by_step = torch.cat([rows, rows[-1:].expand(steps - len(rows), -1)])
    return model


def test_finished_junk_does_not_stop_the_search() -> None:
    """Early EOS candidates rank among the top K and finish K poor hypotheses while
    the best beam is still open: the search must go on until that beam can't win."""
    #          PAD   BOS   EOS   a     b     c
    early = [1e-9, 1e-9, 0.17, 0.80, 0.02, 0.01]
    late = [1e-9, 1e-9, 0.97, 0.01, 0.01, 0.01]
    model = step_model([early] * 4 + [late])
    src, src_lengths = random_batch([4])
    for alpha in (0.0, 1.0):
        found = beam_search(
            model, src, src_lengths, beam_size=3, alpha=alpha, max_len_a=1.0, max_len_b=2
        )
        best = exhaustive_search(model, src[0], 4, max_len=6, alpha=alpha)
        assert found[0].tokens == best.tokens == [3, 3, 3, 3]
        assert found[0].score == pytest.approx(4 * math.log(0.80) + math.log(0.97), rel=1e-4)


def test_beam_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(TableModel(), *random_batch([2]), beam_size=0)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("attention", ["none", "bahdanau"])
def test_search_consistent_on_the_real_model(cell: str, attention: str) -> None:
    from seq2seq.model import Seq2Seq

    model = Seq2Seq(9, 11, cell=cell, attention=attention, embed_dim=8, hidden_size=8, dropout=0.0)
    src, src_lengths = random_batch([5, 2, 7, 3], vocab_size=9)
    assert_search_consistent(
        model.eval(), src, src_lengths, beam_size=3, max_len_a=1.0, max_len_b=3, rel=1e-4
    )
