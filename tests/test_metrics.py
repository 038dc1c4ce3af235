"""sacrebleu scores with signatures."""

import pytest
import sacrebleu

from seq2seq.metrics import (
    corpus_scores,
    score_from_statistics,
    statistics_width,
    sufficient_statistics,
)

HYPS = ["The cat sat on the mat.", "A dog runs in the park"]
REFS = ["The cat sat on a mat.", "A dog is running in the park"]


def test_scores_equal_sacrebleu_functions() -> None:
    bleu, chrf, ter = corpus_scores(HYPS, [REFS], metrics=("bleu", "chrf", "ter"))
    assert bleu.score == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert chrf.score == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    assert ter.score == sacrebleu.corpus_ter(HYPS, [REFS]).score
    assert bleu.signature.startswith("nrefs:1|case:mixed") and "tok:13a" in bleu.signature
    assert 0 < bleu.score < 100


def test_lowercase_and_identity() -> None:
    (cased,) = corpus_scores([h.upper() for h in REFS], [REFS], metrics=("bleu",))
    (lower,) = corpus_scores([h.upper() for h in REFS], [REFS], metrics=("bleu",), lowercase=True)
    assert cased.score < 10
    assert lower.score == pytest.approx(100.0)
    assert "case:lc" in lower.signature


def test_summed_statistics_give_the_corpus_score() -> None:
    hyps = [*HYPS, "", "A man rides a horse .", "Two dogs"]
    refs = [*REFS, "Nothing here", "A man is riding a horse.", "Two dogs play in the snow"]
    for metric, corpus in (("bleu", sacrebleu.corpus_bleu), ("chrf", sacrebleu.corpus_chrf)):
        parts = [sufficient_statistics(metric, hyps[i : i + 2], refs[i : i + 2]) for i in (0, 2, 4)]
        assert parts[0].shape == (statistics_width(metric),)
        assert score_from_statistics(metric, sum(parts)) == corpus(hyps, [refs]).score
