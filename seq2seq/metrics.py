"""Corpus-level scores with sacrebleu, each with its signature."""

from functools import cache
from typing import NamedTuple

import numpy as np
from sacrebleu.metrics import BLEU, CHRF, TER


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


# Sufficient statistics: integer vectors that add up over sentences (and over DDP ranks);
# a corpus score computed from their sum equals the score of the whole corpus at once.
STATISTIC_METRICS = {"bleu": BLEU, "chrf": CHRF}


def sufficient_statistics(metric: str, hypotheses: list[str], references: list[str]) -> np.ndarray:
    """The summed sacrebleu statistics of some sentences: (D,) int64 (BLEU: lengths and
    n-gram matches/totals; chrF: character and word n-gram counts)."""
    scorer = STATISTIC_METRICS[metric]()
    per_sentence = scorer._extract_corpus_statistics(hypotheses, [references])
    width = statistics_width(metric)
    return np.asarray(per_sentence, dtype=np.int64).reshape(-1, width).sum(axis=0)


@cache
def statistics_width(metric: str) -> int:
    """The length of `metric`'s statistics vector."""
    scorer = STATISTIC_METRICS[metric]()
    return len(scorer._extract_corpus_statistics([""], [[""]])[0])


def score_from_statistics(metric: str, statistics: np.ndarray) -> float:
    """The corpus score of summed `sufficient_statistics`."""
    scorer = STATISTIC_METRICS[metric]()
    return float(scorer._compute_score_from_stats([int(x) for x in statistics]).score)
