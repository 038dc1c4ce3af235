"""Corpus-level scores with sacrebleu, each with its signature."""

from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import numpy as np
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF, TER

from seq2seq.errors import UserError, first_line


class CorpusScore(NamedTuple):
    name: str  # "BLEU", "chrF2", "TER"
    score: float
    signature: str
    text: str  # sacrebleu's formatted line, e.g. "BLEU = 34.1 65.2/40.3/..."


def corpus_scores(
    hypotheses: list[str],
    references: list[list[str]],
    *,
    metrics: tuple[str, ...] = ("bleu", "chrf"),
    tokenize: str | None = None,
    lowercase: bool = False,
) -> list[CorpusScore]:
    """Score detokenized hypotheses against one or more reference streams (each aligned to them)."""
    scores = []
    for metric in _make_metrics(metrics, tokenize=tokenize, lowercase=lowercase):
        result = metric.corpus_score(hypotheses, references)
        scores.append(
            CorpusScore(result.name, result.score, str(metric.get_signature()), str(result))
        )
    return scores


def _make_metrics(names: tuple[str, ...], *, tokenize: str | None, lowercase: bool) -> list:
    makers = {
        "bleu": lambda: BLEU(tokenize=tokenize, lowercase=lowercase),
        "chrf": lambda: CHRF(lowercase=lowercase),
        "ter": lambda: TER(case_sensitive=not lowercase),
    }
    unknown = set(names) - set(makers)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {sorted(makers)}")
    return [makers[name]() for name in names]


def check_bleu_tokenize(tokenize: str) -> None:
    """UserError unless `tokenize` is a sacrebleu BLEU tokenizer usable here (ja-mecab, for
    one, needs its extra package; spm and flores download a model)."""
    if tokenize not in BLEU.TOKENIZERS:
        choices = ", ".join(BLEU.TOKENIZERS)
        raise UserError(f"model.bleu_tokenize must be one of {choices}, not {tokenize!r}")
    try:
        _scorer("bleu", tokenize)
    except Exception as err:  # sacrebleu raises what its tokenizer's import or download raises
        raise UserError(f"model.bleu_tokenize {tokenize}: {first_line(err)}") from err


# Sufficient statistics: integer vectors that add up over sentences (and over DDP ranks);
# a corpus score computed from their sum equals the score of the whole corpus at once.
# BLEU's are public: its score's lengths and n-gram counts, and `BLEU.compute_bleu`.
# chrF keeps its statistics private: its two methods are reached only through `_private`
# (pyproject.toml pins sacrebleu to the versions tested; tests/test_metrics.py checks them).
STATISTIC_METRICS = {"bleu": BLEU, "chrf": CHRF}
SACREBLEU_RANGE = ">=2.4,<2.7"  # pyproject.toml's, named by `_private`'s error


def sufficient_statistics(
    metric: str, hypotheses: list[str], references: list[str], *, tokenize: str | None = None
) -> np.ndarray:
    """The summed sacrebleu statistics of some sentences: (D,) int64 (BLEU: hypothesis and
    reference lengths, then n-gram matches and totals, after `tokenize`; chrF: hypothesis,
    reference and matched counts of each character n-gram order)."""
    if not hypotheses:
        return np.zeros(statistics_width(metric), dtype=np.int64)
    scorer = _scorer(metric, tokenize)
    if isinstance(scorer, BLEU):
        score = scorer.corpus_score(hypotheses, [references])
        return np.array([score.sys_len, score.ref_len, *score.counts, *score.totals], np.int64)
    per_sentence = _private(scorer, "_extract_corpus_statistics")(hypotheses, [references])
    return np.asarray(per_sentence, dtype=np.int64).sum(axis=0)


def statistics_width(metric: str) -> int:
    """The length of `metric`'s statistics vector."""
    scorer = _scorer(metric, None)
    if isinstance(scorer, BLEU):
        return 2 + 2 * scorer.max_ngram_order  # lengths, matches, totals
    return 3 * (scorer.char_order + scorer.word_order)  # hypothesis, reference, matched


def score_from_statistics(
    metric: str, statistics: np.ndarray, *, tokenize: str | None = None
) -> float:
    """The corpus score of summed `sufficient_statistics` (made with the same `tokenize`)."""
    scorer = _scorer(metric, tokenize)
    stats = [int(x) for x in statistics]
    if isinstance(scorer, BLEU):
        n = scorer.max_ngram_order
        score = BLEU.compute_bleu(
            correct=stats[2 : 2 + n],
            total=stats[2 + n :],
            sys_len=stats[0],
            ref_len=stats[1],
            smooth_method=scorer.smooth_method,
            smooth_value=scorer.smooth_value,
            effective_order=scorer.effective_order,
            max_ngram_order=n,
        )
        return float(score.score)
    return float(_private(scorer, "_compute_score_from_stats")(stats).score)


@cache
def _scorer(metric: str, tokenize: str | None) -> BLEU | CHRF:
    """One scorer per metric and tokenizer (some tokenizers load a model)."""
    return BLEU(tokenize=tokenize) if metric == "bleu" else STATISTIC_METRICS[metric]()


def _private(scorer: CHRF, name: str) -> Callable:
    """`scorer.name`, a private sacrebleu method; a clear error where it has gone."""
    method = getattr(scorer, name, None)
    if method is None:
        raise RuntimeError(
            f"sacrebleu {sacrebleu.__version__} has no {type(scorer).__name__}.{name}, which "
            f"validation chrF over processes needs: install sacrebleu{SACREBLEU_RANGE}"
        )
    return method
