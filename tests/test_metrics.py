"""sacrebleu scores with signatures, and the statistics that add up over processes."""

import inspect
import random
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from packaging.specifiers import SpecifierSet
from sacrebleu.metrics import BLEU, CHRF

from seq2seq import metrics
from seq2seq.errors import UserError
from seq2seq.metrics import (
    SACREBLEU_RANGE,
    _private,
    check_bleu_tokenize,
    corpus_scores,
    score_from_statistics,
    statistics_width,
    sufficient_statistics,
)

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
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


# Tokenizers that need no extra package or download.
TOKENIZERS = ("13a", "intl", "char", "zh", "none")
WORDS = ("The", "the", "a", "cat", "dog", "sat", "runs", "on", "mat", "park", "don't", "3.5")
WORDS += (",", ".", "!", "?", "-", "(x)", "Ünïcode", "猫が", "座った", "。")


def random_corpus(rng: random.Random, size: int) -> tuple[list[str], list[str]]:
    """`size` random sentence pairs (some empty) from `WORDS`, hypotheses near references."""
    hyps, refs = [], []
    for _ in range(size):
        ref = rng.choices(WORDS, k=rng.randint(0, 12))
        hyp = [w for w in ref if rng.random() < 0.8] + rng.choices(WORDS, k=rng.randint(0, 3))
        if rng.random() < 0.3:
            rng.shuffle(hyp)
        hyps.append(" ".join(hyp))
        refs.append(" ".join(ref))
    return hyps, refs


def random_split(rng: random.Random, size: int) -> list[slice]:
    """`size` items cut into 1 to 5 non-empty consecutive parts."""
    cuts = sorted(rng.sample(range(1, size), rng.randint(0, 4)))
    return [slice(a, b) for a, b in zip([0, *cuts], [*cuts, size], strict=True)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tokenize", TOKENIZERS)
def test_summed_statistics_give_the_corpus_score(seed: int, tokenize: str) -> None:
    """As DDP sums them: any split of a corpus, each part's statistics summed, scores as
    sacrebleu's `corpus_score` of the whole corpus, exactly."""
    rng = random.Random(seed)
    hyps, refs = random_corpus(rng, 40)
    expected = {
        "bleu": BLEU(tokenize=tokenize).corpus_score(hyps, [refs]).score,
        "chrf": CHRF().corpus_score(hyps, [refs]).score,
    }
    for metric, score in expected.items():
        parts = [
            sufficient_statistics(metric, hyps[part], refs[part], tokenize=tokenize)
            for part in random_split(rng, len(hyps))
        ]
        assert all(p.shape == (statistics_width(metric),) and p.dtype == np.int64 for p in parts)
        total = np.sum(parts, axis=0).astype(np.float64)  # as the ranks' float64 reduction
        assert score_from_statistics(metric, total, tokenize=tokenize) == score, metric


def test_handwritten_pairs_and_no_sentences() -> None:
    hyps = [*HYPS, "", "A man rides a horse .", "Two dogs"]
    refs = [*REFS, "Nothing here", "A man is riding a horse.", "Two dogs play in the snow"]
    for metric, corpus in (("bleu", sacrebleu.corpus_bleu), ("chrf", sacrebleu.corpus_chrf)):
        parts = [sufficient_statistics(metric, hyps[i : i + 2], refs[i : i + 2]) for i in (0, 2, 4)]
        assert score_from_statistics(metric, sum(parts)) == corpus(hyps, [refs]).score
        none = sufficient_statistics(metric, [], [])
        assert none.shape == (statistics_width(metric),) and not none.any()
        assert score_from_statistics(metric, none) == 0.0


def test_statistics_follow_the_bleu_tokenizer() -> None:
    hyps, refs = ["猫が座った。", "A dog-runs"], ["猫が座っていた。", "A dog runs"]
    for tokenize in ("13a", "char", "intl"):
        stats = sufficient_statistics("bleu", hyps, refs, tokenize=tokenize)
        expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score
        assert score_from_statistics("bleu", stats, tokenize=tokenize) == expected
    assert score_from_statistics(
        "bleu", sufficient_statistics("bleu", hyps, refs, tokenize="char"), tokenize="char"
    ) != score_from_statistics("bleu", sufficient_statistics("bleu", hyps, refs))


@pytest.mark.parametrize("tokenize", TOKENIZERS)
def test_signature_names_the_tokenizer(tokenize: str) -> None:
    bleu, chrf = corpus_scores(HYPS, [REFS], tokenize=tokenize)
    assert bleu.signature == f"nrefs:1|case:mixed|eff:no|tok:{tokenize}|smooth:exp|version:" + (
        sacrebleu.__version__
    )
    assert chrf.signature.startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no")


def test_unknown_or_unusable_bleu_tokenizer_is_a_user_error() -> None:
    with pytest.raises(UserError, match="must be one of"):
        check_bleu_tokenize("whitespace")
    check_bleu_tokenize("char")


def test_the_private_chrf_methods_used_are_there_as_called() -> None:
    """The guard of the one private sacrebleu use (chrF has no public statistics): where it
    fails, sacrebleu changed them; fix metrics.py before widening pyproject.toml's range."""
    assert f'"sacrebleu{SACREBLEU_RANGE}"' in PYPROJECT.read_text()
    assert version("sacrebleu") in SpecifierSet(SACREBLEU_RANGE)
    extract = inspect.signature(CHRF._extract_corpus_statistics)
    assert list(extract.parameters) == ["self", "hypotheses", "references"]
    assert list(inspect.signature(CHRF._compute_score_from_stats).parameters) == ["self", "stats"]
    assert statistics_width("chrf") == len(CHRF()._extract_corpus_statistics([""], [[""]])[0])
    with pytest.raises(RuntimeError, match=r"has no CHRF\._gone.*sacrebleu>=2\.4,<2\.7"):
        _private(CHRF(), "_gone")


def test_a_tokenizer_that_cannot_load_is_a_one_line_user_error(monkeypatch) -> None:
    def unusable(metric: str, tokenize: str | None) -> None:
        raise ImportError("this tokenizer needs an extra package\nsee its docs")

    monkeypatch.setattr(metrics, "_scorer", unusable)
    with pytest.raises(
        UserError, match=r"^model\.bleu_tokenize char: this tokenizer needs an extra package$"
    ):
        check_bleu_tokenize("char")
