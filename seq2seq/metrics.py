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
# sacrebleu has no public API for them: its private methods are guarded by `_private`
# (pyproject.toml bounds sacrebleu below 3; tests/test_metrics.py checks them).
STATISTIC_METRICS = {"bleu": BLEU, "chrf": CHRF}


def sufficient_statistics(
    metric: str, hypotheses: list[str], references: list[str], *, tokenize: str | None = None
) -> np.ndarray:
    """The summed sacrebleu statistics of some sentences: (D,) int64 (BLEU: lengths and
    n-gram matches/totals, after `tokenize`; chrF: character and word n-gram counts)."""
    extract = _private(_scorer(metric, tokenize), "_extract_corpus_statistics")
    per_sentence = extract(hypotheses, [references])
    width = statistics_width(metric)
    return np.asarray(per_sentence, dtype=np.int64).reshape(-1, width).sum(axis=0)


@cache
def statistics_width(metric: str) -> int:
    """The length of `metric`'s statistics vector."""
    extract = _private(_scorer(metric, None), "_extract_corpus_statistics")
    return len(extract([""], [[""]])[0])


def score_from_statistics(
    metric: str, statistics: np.ndarray, *, tokenize: str | None = None
) -> float:
    """The corpus score of summed `sufficient_statistics`."""
    compute = _private(_scorer(metric, tokenize), "_compute_score_from_stats")
    return float(compute([int(x) for x in statistics]).score)


@cache
def _scorer(metric: str, tokenize: str | None) -> BLEU | CHRF:
    """One scorer per metric and tokenizer (some tokenizers load a model)."""
    return BLEU(tokenize=tokenize) if metric == "bleu" else STATISTIC_METRICS[metric]()


def _private(scorer: BLEU | CHRF, name: str) -> Callable:
    """`scorer.name`, a private sacrebleu method; a clear error where it has gone."""
    method = getattr(scorer, name, None)
    if method is None:
        raise RuntimeError(
            f"sacrebleu {sacrebleu.__version__} has no {type(scorer).__name__}.{name}, which "
            "validation BLEU over processes needs: install sacrebleu>=2.4,<3"
        )
    return method
