"""Ensembles: one model is that model, two copies are one, members combine as computed by hand."""

import math
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from test_search import assert_search_consistent, random_batch, teacher_force
from torch import Tensor, nn

from seq2seq.cli.evaluate import main as evaluate_main
from seq2seq.cli.translate import main as translate_main
from seq2seq.ensemble import Ensemble
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq
from seq2seq.search import beam_search, greedy_search
from seq2seq.tokenizer import Tokenizer
from seq2seq.translator import Translator

PAD, BOS, EOS, X, Y, Z = range(6)


def tiny_model(seed: int, **settings: str) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(9, 11, embed_dim=8, hidden_size=8, dropout=0.0, **settings).eval()


class Steps(NamedTuple):
    step: Tensor  # (N,)

    def index_select(self, index: Tensor) -> "Steps":
        return Steps(self.step[index])


class StepModel(nn.Module):
    """Next-token probabilities that depend on the step only."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def __init__(self, probabilities: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.tensor(probabilities).log()  # (steps, V)
        self.output_size = self.table.size(1)  # its outputs are the step's log-probs

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Steps, Steps]:
        return Steps(torch.zeros_like(src_lengths)), Steps(torch.zeros_like(src_lengths))

    def decode_step(self, memory: Steps, state: Steps, prev: Tensor) -> tuple[Tensor, Steps, None]:
        return self.table[state.step], Steps(state.step + 1), None

    def log_probs(self, outputs: Tensor) -> Tensor:
        return outputs.log_softmax(dim=-1)


ENDING = [0.0, 0.0, 0.9, 0.05, 0.05, 0.0]  # then EOS is likeliest
#           PAD  BOS  EOS  X     Y     Z
FIRST_A = [0.0, 0.0, 0.0, 0.5, 0.05, 0.45]  # A alone: X
FIRST_B = [0.0, 0.0, 0.0, 0.05, 0.55, 0.4]  # B alone: Y


@pytest.mark.parametrize("beam_size", [1, 3])
def test_ensemble_of_one_model_is_that_model(beam_size: int) -> None:
    """The same tokens, scores and attention, bit for bit."""
    model = tiny_model(1)
    src, src_lengths = random_batch([5, 2, 7], vocab_size=9)
    options = {"beam_size": beam_size, "nbest": min(beam_size, 2), "return_attention": True}
    alone = beam_search(model, src, src_lengths, **options)
    ensembled = beam_search(Ensemble([model]), src, src_lengths, **options)
    for mine, theirs in zip(chain(*ensembled), chain(*alone), strict=True):
        assert (mine.tokens, mine.score, mine.log_prob) == (
            theirs.tokens,
            theirs.score,
            theirs.log_prob,
        )
        assert torch.equal(mine.attention, theirs.attention)


@pytest.mark.parametrize("rule", ["logprob", "prob"])
def test_two_copies_give_the_tokens_and_scores_of_one(rule: str) -> None:
    model = tiny_model(2)
    src, src_lengths = random_batch([4, 6], vocab_size=9)
    alone = beam_search(model, src, src_lengths, beam_size=4, nbest=3)
    pair = beam_search(Ensemble([model, model], rule), src, src_lengths, beam_size=4, nbest=3)
    for mine, theirs in zip(pair, alone, strict=True):
        assert [h.tokens for h in mine] == [h.tokens for h in theirs]
        assert [h.score for h in mine] == pytest.approx([h.score for h in theirs], rel=1e-5)


@pytest.mark.parametrize(
    ("rule", "combine"),
    [
        ("logprob", lambda a, b: (math.log(a) + math.log(b)) / 2),
        ("prob", lambda a, b: math.log((a + b) / 2)),
    ],
)
def test_pair_chooses_what_neither_alone_would(rule: str, combine) -> None:
    """A alone says X, B alone says Y; together Z, the token both find likely."""
    a, b = StepModel([FIRST_A, ENDING]), StepModel([FIRST_B, ENDING])
    src, src_lengths = torch.tensor([[4, 5]]), torch.tensor([2])
    assert greedy_search(a, src, src_lengths)[0].tokens == [X]
    assert greedy_search(b, src, src_lengths)[0].tokens == [Y]
    for found in (
        greedy_search(Ensemble([a, b], rule), src, src_lengths),
        [beam_search(Ensemble([a, b], rule), src, src_lengths, beam_size=3)[0][0]],
    ):
        (hyp,) = found
        assert hyp.tokens == [Z]
        by_hand = combine(FIRST_A[Z], FIRST_B[Z]) + combine(ENDING[EOS], ENDING[EOS])
        assert hyp.log_prob == pytest.approx(by_hand, rel=1e-6)
        assert hyp.score == pytest.approx(by_hand / 2, rel=1e-6)


@pytest.mark.parametrize("rule", ["logprob", "prob"])
def test_mixed_architectures_search_consistently(rule: str) -> None:
    """A GRU with attention, an LSTM without, a tanh RNN of another size: beam 1 is greedy,
    hypotheses are the ensemble's, batch invariance holds; attention is the first model's."""
    members = [
        tiny_model(3, cell="gru", attention="bahdanau"),
        tiny_model(4, cell="lstm", attention="none"),
        Seq2Seq(9, 11, cell="rnn", embed_dim=6, hidden_size=12, dropout=0.0).eval(),
    ]
    src, src_lengths = random_batch([5, 2, 7, 3], vocab_size=9)
    assert_search_consistent(Ensemble(members, rule), src, src_lengths, rel=1e-4)


def test_ensemble_log_prob_is_the_members_mean() -> None:
    members = [tiny_model(5), tiny_model(6, cell="lstm")]
    src, src_lengths = random_batch([6], vocab_size=9)
    (hyp,) = greedy_search(Ensemble(members), src, src_lengths, max_len_a=2.0, max_len_b=0)
    ended = len(hyp.tokens) < 12  # else stopped at the length limit, without EOS
    singles = [teacher_force(m, src[0], 6, hyp.tokens, ended)[0] for m in members]
    assert hyp.log_prob == pytest.approx(sum(singles) / 2, rel=1e-5)


@pytest.mark.parametrize(
    ("rule", "combine"),
    [
        ("logprob", lambda member: member.mean(dim=0)),
        ("prob", lambda member: member.exp().mean(dim=0).log()),
    ],
)
def test_log_probs_depends_on_its_outputs_alone(rule: str, combine) -> None:
    """Before any decode_step, twice, and after a step of other rows: the members'
    log-probabilities of their own slices of the outputs, combined by hand."""
    members = [tiny_model(7), Seq2Seq(9, 11, embed_dim=6, hidden_size=12, dropout=0.0).eval()]
    ensemble = Ensemble(members, rule)
    src, src_lengths = random_batch([5, 3], vocab_size=9)
    memory, state = ensemble.encode(src, src_lengths)
    prev = torch.full((2,), BOS)
    with torch.no_grad():
        per_model = zip(members, memory, state, strict=True)
        own = [m.decode_step(mem, st, prev)[0] for m, mem, st in per_model]  # (2, 8), (2, 12)
        by_hand = combine(torch.stack([m.log_probs(o) for m, o in zip(members, own, strict=True)]))
        outputs = torch.cat(own, dim=-1)  # (2, 8 + 12)
        first = ensemble.log_probs(outputs)  # before any decode_step
        rows = torch.tensor([1])
        ensemble.decode_step(memory.index_select(rows), state.index_select(rows), prev[:1])
        again = ensemble.log_probs(outputs)
    torch.testing.assert_close(first, by_hand)
    assert torch.equal(again, first)


def test_invalid_ensembles_are_refused() -> None:
    with pytest.raises(UserError, match="at least one model"):
        Ensemble([])
    with pytest.raises(UserError, match="logprob or prob"):
        Ensemble([tiny_model(1)], "max")  # type: ignore[arg-type]
    other = Seq2Seq(9, 11, eos_id=4, embed_dim=8, hidden_size=8)
    with pytest.raises(UserError, match="pad, BOS, EOS"):
        Ensemble([tiny_model(1), other])


def test_translator_of_two_copies_translates_as_one(trained: Path) -> None:
    best = trained / "checkpoints" / "best.ckpt"
    sentences = ["einundzwanzig", "dreihundertzwölf", ""]
    alone = Translator.from_checkpoint(best, device="cpu")
    pair = Translator.from_checkpoints([best, best], device="cpu", rule="prob")
    assert isinstance(pair.model, Ensemble)
    for beam_size in (1, 3):
        mine = pair.translate_nbest(sentences, beam_size=beam_size, attention=True)
        theirs = alone.translate_nbest(sentences, beam_size=beam_size, attention=True)
        assert [r[0].text for r in mine] == [r[0].text for r in theirs]
        assert [r[0].score for r in mine] == pytest.approx([r[0].score for r in theirs], rel=1e-5)
        assert mine[0][0].attention.shape == theirs[0][0].attention.shape


def test_ensemble_of_other_vocabularies_is_one_line_error(trained: Path, tmp_path: Path) -> None:
    best = trained / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    sentences = [f"satz {i} wort {i % 7}" for i in range(300)]
    checkpoint["tokenizer"] = Tokenizer.train(sentences, sentences, vocab_size=30).to_dict()
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match=r"other\.ckpt and .*best\.ckpt have different Sentence"):
        Translator.from_checkpoints([best, tmp_path / "other.ckpt"], device="cpu")


def test_scripts_take_several_checkpoints(trained: Path, tmp_path: Path) -> None:
    best, last = trained / "checkpoints" / "best.ckpt", trained / "checkpoints" / "last.ckpt"
    source, refs = tmp_path / "in.de", tmp_path / "ref.en"
    source.write_text("einundzwanzig\ndreihundert\n", encoding="utf-8")
    refs.write_text("twenty-one\nthree hundred\n", encoding="utf-8")
    out = tmp_path / "out.en"
    args = ["--checkpoint", str(best), str(last), "--input", str(source), "--output", str(out)]
    translate_main([*args, "--ensemble-rule", "prob", "--nbest", "2", "--beam-size", "3"])
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4
    evaluate_main(["--checkpoint", str(best), str(last), "--src", str(source), "--ref", str(refs)])
