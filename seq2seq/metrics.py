"""Corpus-level scores with sacrebleu, each with its signature."""

from typing import NamedTuple

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
