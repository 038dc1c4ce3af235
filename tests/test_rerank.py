"""Reranking n-best lists: translate.py's lists read back, score.py's feature equal to
search's own score, the weighted order, reverse scoring, and bad lists."""

import json
import math
import re
from pathlib import Path

import pytest

from seq2seq.cli.score import main as score_main
from seq2seq.cli.translate import main as translate_main
from seq2seq.errors import UserError
from seq2seq.rerank import Candidate, format_nbest, read_nbest, rerank
from seq2seq.scoring import score_pairs
from seq2seq.translator import Translator


@pytest.fixture(scope="module")
def checkpoint(trained: Path) -> str:
    return str(trained / "checkpoints" / "best.ckpt")


@pytest.fixture(scope="module")
def source(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rerank") / "src.de"
    lines = (tiny_corpus / "test.de").read_text().splitlines()[:8]
    path.write_text("\n".join(lines) + "\n")
    return path


def _nbest(checkpoint: str, source: Path, fmt: str) -> Path:
    out = source.with_name(f"nbest.{fmt}")
    options = ["--beam-size", "4", "--nbest", "3", "--format", fmt]
    files = ["--input", str(source), "--output", str(out)]
    translate_main(["--checkpoint", checkpoint, *files, *options])
    return out


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_each_candidate_gets_its_pairs_score_and_lines_are_reranked(
    checkpoint: str, source: Path, fmt: str
) -> None:
    """The feature score.py adds is the candidate's per-piece log-probability, scored
    alone (tests/test_score.py checks that against search's own); the list is reordered by
    it with --weights 0 1, the candidates of each line staying together."""
    nbest, out = _nbest(checkpoint, source, fmt), source.with_name(f"rescored-{fmt}.jsonl")
    files = ["--src", str(source), "--nbest", str(nbest), "--output", str(out)]
    score_main(["--checkpoint", checkpoint, *files, "--format", "jsonl", "--weights", "0", "1"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [n for n in range(1, 9) for _ in range(3)]
    translator = Translator.from_checkpoint(checkpoint, "cpu")
    sources = source.read_text().splitlines()
    searched = translator.translate_nbest(sources, beam_size=4, nbest=3)
    for line, ranked in enumerate(searched, start=1):
        rescored = [r for r in rows if r["line"] == line]
        assert sorted(r["text"] for r in rescored) == sorted(t.text for t in ranked)
        for row in rescored:
            (alone,) = score_pairs(translator, [sources[line - 1]], [row["text"]])
            assert row["features"][1] == pytest.approx(alone.per_piece, abs=1e-5)
            search_score = next(t.score for t in ranked if t.text == row["text"])
            assert row["features"][0] == pytest.approx(search_score, abs=1e-5)
        scores = [r["score"] for r in rescored]
        assert scores == sorted(scores, reverse=True)
        assert scores == [r["features"][1] for r in rescored]


def test_reverse_scores_the_source_given_each_candidate(checkpoint: str, source: Path) -> None:
    nbest, out = _nbest(checkpoint, source, "jsonl"), source.with_name("reverse.jsonl")
    files = ["--src", str(source), "--nbest", str(nbest), "--output", str(out)]
    score_main(["--checkpoint", checkpoint, *files, "--reverse", "--format", "jsonl"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    sources = source.read_text().splitlines()
    translator = Translator.from_checkpoint(checkpoint, "cpu")
    for row in rows:
        (expected,) = score_pairs(translator, [row["text"]], [sources[row["line"] - 1]])
        assert row["features"][1] == pytest.approx(expected.per_piece, abs=1e-5)
        assert row["score"] == pytest.approx(sum(row["features"]))


def test_best_writes_one_line_per_source(checkpoint: str, source: Path) -> None:
    nbest, out = _nbest(checkpoint, source, "text"), source.with_name("best.en")
    files = ["--src", str(source), "--nbest", str(nbest), "--output", str(out)]
    score_main(["--checkpoint", checkpoint, *files, "--best", "--weights", "1", "0"])
    firsts = nbest.read_text().splitlines()[::3]
    assert out.read_text().splitlines() == [line.split("\t", 1)[1] for line in firsts]


def test_weighted_order_with_unscored_candidates_last() -> None:
    a, b, empty = (
        Candidate("a", [-1.0, -3.0]),
        Candidate("b", [-2.0, -1.0]),
        Candidate("", [0, math.nan]),
    )
    groups = [[a, b, empty]]
    assert [c.text for c in rerank(groups, [1, 0])[0]] == ["a", "b", ""]
    assert [c.text for c in rerank(groups, [0.5, 1])[0]] == ["b", "a", ""]
    lines = list(format_nbest(rerank(groups, [0.5, 1]), [0.5, 1], "tsv"))
    assert lines == ["-2.000000\tb\n", "-3.500000\ta\n", "-inf\t\n"]
    with pytest.raises(UserError, match="--weights gives 1 weight"):
        rerank(groups, [1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("-1.0\ta\n-2.0\tb\n-1.5\tc\n", "3 lines are not the same number of candidates"),
        ("-1.0\ta\nnot a score\n", "line 2: expected score<TAB>text"),
        (
            '{"line": 1, "score": -1, "text": "a"}\n{"line": 3, "score": -1, "text": "b"}\n',
            "line 2: not an n-best object",
        ),
        ('{"line": 1, "score": -1, "text": "a"}\n', "no candidates for source line(s) [2]"),
    ],
)
def test_bad_lists_name_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "nbest.txt"
    path.write_text(content)
    with pytest.raises(UserError, match=f"{re.escape(str(path))}.*{re.escape(message)}"):
        read_nbest(str(path), 2)
