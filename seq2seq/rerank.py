"""Reranking n-best lists: translate.py's `--nbest` output, each candidate carrying
features (search's score first, then the scores that `scripts/score.py --nbest` adds),
ordered by a weighted sum of them.

A tsv list holds `score<TAB>text`, the same number of candidates for every input line;
a jsonl list holds objects with `line`, `rank`, `score`, `text` and, once rescored,
`features`. Where a feature is nan (a pair that could not be scored: an empty output),
the candidate ranks last.
"""

import json
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from seq2seq.errors import UserError
from seq2seq.textfiles import read_text_lines


class Candidate(NamedTuple):
    """One translation of an n-best list."""

    text: str
    features: list[float]  # search's score, then each rescoring's


def read_nbest(path: str, sources: int) -> list[list[Candidate]]:
    """The candidates of each of `sources` input lines, in file order; UserError naming
    `path` and the line for a list that is not translate.py's --nbest output."""
    lines = read_text_lines(path)
    if lines and lines[0].lstrip().startswith("{"):
        return _read_jsonl(path, lines, sources)
    return _read_tsv(path, lines, sources)


def _read_tsv(path: str, lines: list[str], sources: int) -> list[list[Candidate]]:
    """`score<TAB>text` lines, len(lines) / sources a source line."""
    if sources == 0 or len(lines) % sources:
        raise UserError(
            f"{path}: {len(lines)} lines are not the same number of candidates for each of "
            f"the {sources} source lines"
        )
    candidates = [_tsv_candidate(path, number, line) for number, line in enumerate(lines, 1)]
    per_line = len(lines) // sources
    return [candidates[i : i + per_line] for i in range(0, len(lines), per_line)]


def _tsv_candidate(path: str, number: int, line: str) -> Candidate:
    score, tab, text = line.partition("\t")
    try:
        if tab:
            return Candidate(text, [float(score)])
    except ValueError:
        pass
    raise UserError(f"{path}, line {number}: expected score<TAB>text (translate.py --nbest)")


def _read_jsonl(path: str, lines: list[str], sources: int) -> list[list[Candidate]]:
    """JSON objects with `line` (1 to `sources`), `text`, and `features` or `score`."""
    groups: list[list[Candidate]] = [[] for _ in range(sources)]
    for number, line in enumerate(lines, start=1):
        try:
            fields = json.loads(line)
            features = [float(f) for f in fields.get("features", [fields["score"]])]
            groups[int(fields["line"]) - 1].append(Candidate(str(fields["text"]), features))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise UserError(
                f"{path}, line {number}: not an n-best object of translate.py --format jsonl "
                f"with a line between 1 and {sources} ({type(err).__name__}: {err})"
            ) from None
    missing = [n for n, group in enumerate(groups, start=1) if not group]
    if missing:
        raise UserError(f"{path}: no candidates for source line(s) {missing[:10]}")
    return groups


def combined_score(features: Sequence[float], weights: Sequence[float]) -> float:
    """The weighted sum of `features`; -inf where one is nan."""
    if any(math.isnan(f) for f in features):
        return -math.inf
    return sum(w * f for w, f in zip(weights, features, strict=True))


def rerank(groups: list[list[Candidate]], weights: Sequence[float]) -> list[list[Candidate]]:
    """Each group best first by `combined_score` (ties keep the list's order); UserError
    unless there is one weight per feature."""
    counts = {len(c.features) for group in groups for c in group}
    if counts != {len(weights)}:
        raise UserError(
            f"--weights gives {len(weights)} weight(s), the candidates have "
            f"{' or '.join(map(str, sorted(counts)))} feature(s)"
        )
    return [
        sorted(g, key=lambda c: combined_score(c.features, weights), reverse=True) for g in groups
    ]


def format_nbest(
    groups: list[list[Candidate]], weights: Sequence[float], fmt: str, best: bool = False
) -> Iterator[str]:
    """Output lines: with `best` each line's first text only; else every candidate, as
    `combined score<TAB>text` (tsv) or a jsonl object with its `features`."""
    for number, group in enumerate(groups, start=1):
        for rank, candidate in enumerate(group[:1] if best else group, start=1):
            score = combined_score(candidate.features, weights)
            if best:
                yield candidate.text + "\n"
            elif fmt == "jsonl":
                fields = {"line": number, "rank": rank, "score": score, "text": candidate.text}
                yield (
                    json.dumps(fields | {"features": candidate.features}, ensure_ascii=False) + "\n"
                )
            else:
                yield f"{score:.6f}\t{candidate.text}\n"
