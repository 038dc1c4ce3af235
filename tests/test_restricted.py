"""Decoding over per-sentence shortlists: each row normalized over its own candidates,
batch-independent, and the whole vocabulary as a shortlist changes nothing."""

import math
from pathlib import Path

import pytest
import torch

from seq2seq.cli.shortlist import main as shortlist_main
from seq2seq.cli.translate import main as translate_main
from seq2seq.ensemble import Ensemble
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq
from seq2seq.quantize import int8_supported, quantize_int8
from seq2seq.restricted import Restricted
from seq2seq.sampling import Sampling, sample_search
from seq2seq.search import beam_search, greedy_search
from seq2seq.shortlist import Shortlist
from seq2seq.translator import Translator

VOCAB = 30


def _model(seed: int = 0, attention: str = "luong") -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(VOCAB, VOCAB, attention=attention, embed_dim=16, hidden_size=16).eval()


def _shortlist(k: int = 3, frequent: list[int] | None = None, seed: int = 1) -> Shortlist:
    """Each source id's k random candidates (one source id knows none), plus `frequent`."""
    generator = torch.Generator().manual_seed(seed)
    candidates = torch.randint(4, VOCAB, (VOCAB, k), generator=generator)
    candidates[5] = -1
    frequent_ids = torch.tensor([4, 6] if frequent is None else frequent)
    return Shortlist(candidates, frequent_ids, fingerprint="test", tgt_vocab_size=VOCAB)


def _everything() -> Shortlist:
    return _shortlist(frequent=list(range(VOCAB)))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randint(4, VOCAB, (5, 8), generator=torch.Generator().manual_seed(2))
    return src, torch.tensor([8, 3, 6, 1, 5])


def _allowed_by_hand(shortlist: Shortlist, sentence: list[int], eos: int) -> set[int]:
    ids = set(shortlist.frequent.tolist()) | {eos}
    for piece in sentence:
        ids |= {t for t in shortlist.candidates[piece].tolist() if t >= 0}
    return ids


def test_each_row_is_normalized_over_its_own_candidates() -> None:
    model, shortlist = _model(), _shortlist()
    restricted = Restricted(model, shortlist)
    src, lengths = _batch()
    vocab = restricted.vocabulary(src, lengths)  # (U,)
    assert vocab[:4].tolist() == [0, 1, 2, 3] and bool((vocab.diff() > 0).all())
    memory, state = restricted.encode(src, lengths)
    beams = torch.arange(5).repeat_interleave(2)  # two rows per sentence
    prev = torch.randint(0, vocab.numel(), (10,))  # in the batch's vocabulary
    found, _, _ = restricted.decode_step(memory, state.index_select(beams), prev)  # (10, U)
    plain_memory, plain_state = model.encode(src, lengths)
    outputs, _, _ = model.decode_step(plain_memory, plain_state.index_select(beams), vocab[prev])
    logits = model.decoder.logits(outputs)  # (10, V)
    for row, sentence in enumerate(beams.tolist()):
        allowed = sorted(_allowed_by_hand(shortlist, src[sentence, : lengths[sentence]], 3))
        expected = torch.full((VOCAB,), -math.inf)
        expected[allowed] = torch.log_softmax(logits[row, allowed], dim=0)
        torch.testing.assert_close(found[row], expected[vocab], atol=1e-5, rtol=0)
    assert torch.equal(restricted.log_probs(found), found)


@pytest.mark.parametrize("search", ["greedy", "beam", "sampling"])
def test_the_whole_vocabulary_as_shortlist_changes_nothing(search: str) -> None:
    model = _model()
    src, lengths = _batch()
    plain, restricted = (
        _decode(model, search, src, lengths),
        _decode(Restricted(model, _everything()), search, src, lengths),
    )
    for a, b in zip(plain, restricted, strict=True):
        assert a.tokens == b.tokens
        assert b.score == pytest.approx(a.score, abs=1e-5)


def _decode(model, search: str, src: torch.Tensor, lengths: torch.Tensor) -> list:
    """Each sentence's best (or first drawn) hypothesis."""
    if search == "greedy":
        return greedy_search(model, src, lengths)
    if search == "beam":
        return [hyps[0] for hyps in beam_search(model, src, lengths, beam_size=4, nbest=2)]
    seeds = list(range(10, 10 + src.size(0)))
    return [hyps[0] for hyps in sample_search(model, src, lengths, seeds=seeds, num_samples=2)]


def _target_ids(restricted: Restricted, src: torch.Tensor, lengths: torch.Tensor, found: list):
    """Hypotheses of `restricted`'s search with their tokens as target ids."""
    vocab = restricted.vocabulary(src, lengths).tolist()
    return [h._replace(tokens=[vocab[t] for t in h.tokens]) for h in found]


@pytest.mark.parametrize("search", ["greedy", "beam", "sampling"])
def test_a_sentence_decodes_alike_alone_and_in_a_batch(search: str) -> None:
    restricted = Restricted(_model(), _shortlist())
    src, lengths = _batch()
    together = _target_ids(restricted, src, lengths, _decode(restricted, search, src, lengths))
    for row, hypothesis in enumerate(together):
        alone_src, alone_length = src[row : row + 1, : lengths[row]], lengths[row : row + 1]
        if search == "sampling":
            samples = sample_search(
                restricted, alone_src, alone_length, seeds=[10 + row], num_samples=2
            )
            found = [samples[0][0]]
        else:
            found = _decode(restricted, search, alone_src, alone_length)
        (alone,) = _target_ids(restricted, alone_src, alone_length, found)
        assert alone.tokens == hypothesis.tokens
        assert alone.score == pytest.approx(hypothesis.score, abs=1e-5)


def test_outputs_stay_in_each_sentences_shortlist() -> None:
    shortlist = _shortlist(k=2, frequent=[4])
    restricted, (src, lengths) = Restricted(_model(), shortlist), _batch()
    found = beam_search(restricted, src, lengths, beam_size=4, nbest=4)
    for row, hyps in enumerate(found):
        allowed = _allowed_by_hand(shortlist, src[row, : lengths[row]].tolist(), 3)
        for hypothesis in _target_ids(restricted, src, lengths, hyps):
            assert set(hypothesis.tokens) <= allowed
            assert math.isfinite(hypothesis.score)


@pytest.mark.skipif(not int8_supported(), reason="no int8 kernels on this CPU")
def test_an_int8_model_restricted_to_everything_searches_as_it_does() -> None:
    model = quantize_int8(_model(), torch.device("cpu"))
    src, lengths = _batch()
    plain = beam_search(model, src, lengths, beam_size=3)
    found = beam_search(Restricted(model, _everything()), src, lengths, beam_size=3)
    for a, b in zip(plain, found, strict=True):
        assert a[0].tokens == b[0].tokens
        assert b[0].score == pytest.approx(a[0].score, abs=1e-5)


def test_a_restricted_ensemble_with_everything_equals_the_plain_ensemble() -> None:
    members = [_model(0), _model(1, attention="bahdanau")]
    src, lengths = _batch()
    plain = beam_search(Ensemble(members), src, lengths, beam_size=3)
    restricted = Restricted(Ensemble(members), _everything())
    found = beam_search(restricted, src, lengths, beam_size=3)
    for a, b in zip(plain, found, strict=True):
        assert a[0].tokens == b[0].tokens
        assert b[0].score == pytest.approx(a[0].score, abs=1e-5)


@pytest.fixture(scope="module")
def checkpoint(trained: Path) -> Path:
    return trained / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def shortlist_file(checkpoint: Path, tiny_corpus: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shortlist") / "lex.pt"
    corpus = ["--src", str(tiny_corpus / "train.de"), "--tgt", str(tiny_corpus / "train.en")]
    shortlist_main(["--checkpoint", str(checkpoint), *corpus, "--output", str(out), "-k", "4"])
    return out


def test_translator_output_of_a_sentence_does_not_depend_on_its_batch(
    checkpoint: Path, shortlist_file: Path, tiny_corpus: Path
) -> None:
    """Through the Python API: beam, greedy, n-best and sampling."""
    translator = Translator.from_checkpoint(checkpoint, "cpu", shortlist=shortlist_file)
    sentences = (tiny_corpus / "test.de").read_text().splitlines()[:12]
    runs = [{"beam_size": 5, "nbest": 3}, {"beam_size": 1}, {"sampling": Sampling(seed=3)}]
    for options in runs:
        together = translator.translate_nbest(sentences, **options)
        for line, (sentence, ranked) in enumerate(zip(sentences, together, strict=True)):
            alone = translator.translate_nbest([sentence], first_line=line + 1, **options)[0]
            assert [t.text for t in alone] == [t.text for t in ranked]
            assert [t.score for t in alone] == pytest.approx([t.score for t in ranked], abs=1e-5)


def test_translate_py_takes_both_options(
    checkpoint: Path, shortlist_file: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hyp.en"
    source = tiny_corpus / "test.de"
    options = ["--quantize", "int8", "--shortlist", str(shortlist_file), "--device", "cpu"]
    translate_main(
        ["--checkpoint", str(checkpoint), "--input", str(source), "--output", str(out), *options]
    )
    assert len(out.read_text().splitlines()) == len(source.read_text().splitlines())


def test_a_shortlist_of_other_models_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    _shortlist().save(str(other))
    with pytest.raises(UserError, match=f"{other} was built for SentencePiece model"):
        Translator.from_checkpoint(checkpoint, "cpu", shortlist=other)
