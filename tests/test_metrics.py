"""sacrebleu scores with signatures."""

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from seq2seq import metrics
from seq2seq.errors import UserError
from seq2seq.metrics import (
    _private,
    check_bleu_tokenize,
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


def test_statistics_follow_the_bleu_tokenizer() -> None:
    hyps, refs = ["猫が座った。", "A dog-runs"], ["猫が座っていた。", "A dog runs"]
    for tokenize in ("13a", "char", "intl"):
        stats = sufficient_statistics("bleu", hyps, refs, tokenize=tokenize)
        expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score
        assert score_from_statistics("bleu", stats, tokenize=tokenize) == expected
    assert score_from_statistics(
        "bleu", sufficient_statistics("bleu", hyps, refs, tokenize="char"), tokenize="char"
    ) != score_from_statistics("bleu", sufficient_statistics("bleu", hyps, refs))


def test_unknown_or_unusable_bleu_tokenizer_is_a_user_error() -> None:
    with pytest.raises(UserError, match="must be one of"):
        check_bleu_tokenize("whitespace")
    check_bleu_tokenize("char")


def test_a_missing_private_sacrebleu_method_says_what_to_install() -> None:
    with pytest.raises(RuntimeError, match=r"has no BLEU\._gone.*sacrebleu>=2\.4,<3"):
        _private(BLEU(), "_gone")
    for name in ("_extract_corpus_statistics", "_compute_score_from_stats"):
        assert callable(_private(BLEU(), name)) and callable(_private(CHRF(), name))


def test_a_tokenizer_that_cannot_load_is_a_one_line_user_error(monkeypatch) -> None:
    def unusable(metric: str, tokenize: str | None) -> None:
        raise ImportError("this tokenizer needs an extra package\nsee its docs")

    monkeypatch.setattr(metrics, "_scorer", unusable)
    with pytest.raises(
        UserError, match=r"^model\.bleu_tokenize char: this tokenizer needs an extra package$"
    ):
        check_bleu_tokenize("char")
