"""Scoring given pairs: search's own log-probs, batch independence, a hand-computed reference,
ensembles as decoding combines them, and score.py's output and errors."""

import copy
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from test_search import teacher_force

from seq2seq.alignment import word_alignment
from seq2seq.cli import score as score_module
from seq2seq.cli.score import main as score_main
from seq2seq.ensemble import Ensemble
from seq2seq.scoring import forced_attention, score_pairs, target_log_probs
from seq2seq.search_rules import at_length_limit
from seq2seq.translator import Translator


@pytest.fixture(scope="module")
def checkpoint(trained: Path) -> str:
    return str(trained / "checkpoints" / "best.ckpt")


@pytest.fixture(scope="module")
def translator(checkpoint: str) -> Translator:
    return Translator.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def pairs(tiny_corpus: Path) -> tuple[list[str], list[str]]:
    """The tiny corpus's 30 test pairs."""
    sides = [(tiny_corpus / f"test.{lang}").read_text().splitlines() for lang in ("de", "en")]
    return sides[0], sides[1]


@pytest.fixture(scope="module")
def ending(translator: Translator) -> Translator:
    """The tiny model with its EOS logit raised by 0.5: trained for seconds, it repeats
    itself up to the length limit, where search scores no EOS; this one ends about half of
    its outputs."""
    model = copy.deepcopy(translator.model)
    with torch.no_grad():
        model.decoder.output.bias[model.eos_id] += 0.5
    limits = translator.max_src_len, translator.max_len_a, translator.max_len_b
    return Translator(model, translator.tokenizer, translator.device, *limits)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_score_of_a_search_output_is_its_log_prob(
    ending: Translator, pairs: tuple[list[str], list[str]], beam_size: int
) -> None:
    sources = pairs[0]
    found = ending.translate_nbest(sources, beam_size=beam_size, length_penalty="none")
    best = [ranked[0] for ranked in found]
    source_ids = ending.encode_sources(sources, first_line=1)
    lengths = torch.tensor([len(ids) for ids in source_ids])
    cut = at_length_limit(
        [len(t.tokens) for t in best], lengths, ending.max_len_a, ending.max_len_b
    )
    ended = [i for i, flag in enumerate(cut) if not flag]  # their log_prob has the EOS term
    assert sum(1 for i in ended if best[i].tokens) >= 5
    scores = target_log_probs(
        ending, [source_ids[i] for i in ended], [best[i].tokens for i in ended]
    )
    assert scores.tolist() == pytest.approx([best[i].log_prob for i in ended], abs=1e-4)


def test_a_pair_scores_the_same_alone_and_in_any_batch(
    translator: Translator, pairs: tuple[list[str], list[str]]
) -> None:
    """Batches of at most 40 padded tokens (several here) or all 30 pairs in one."""
    sources, targets = pairs
    small = score_pairs(translator, sources, targets, batch_tokens=40)
    large = score_pairs(translator, sources, targets, batch_tokens=100_000)
    alone = [score_pairs(translator, [s], [t])[0] for s, t in zip(sources, targets, strict=True)]
    for scores in (small, large):
        assert [s.pieces for s in scores] == [s.pieces for s in alone]
        assert [s.log_prob for s in scores] == pytest.approx([s.log_prob for s in alone], abs=1e-5)


def test_score_is_the_sum_of_log_softmax_of_the_teacher_forced_logits(
    translator: Translator, pairs: tuple[list[str], list[str]]
) -> None:
    source, target = pairs[0][3], pairs[1][3]
    model, tokenizer = translator.model, translator.tokenizer
    (src_ids,), (tgt_ids,) = tokenizer.encode_src([source]), tokenizer.encode_tgt([target])
    with torch.no_grad():
        logits = model(
            torch.tensor([src_ids]),
            torch.tensor([len(src_ids)]),
            torch.tensor([[model.bos_id, *tgt_ids]]),
        )[0]  # (T, V)
    expected = sum(
        torch.log_softmax(step, dim=-1)[token].item()
        for step, token in zip(logits, [*tgt_ids, model.eos_id], strict=True)
    )
    (score,) = score_pairs(translator, [source], [target])
    assert score.pieces == len(tgt_ids) + 1
    assert score.log_prob == pytest.approx(expected, abs=1e-4)
    assert score.per_piece == pytest.approx(score.log_prob / score.pieces)


@pytest.mark.parametrize("rule", ["logprob", "prob"])
def test_an_ensemble_of_two_copies_scores_as_the_model(
    checkpoint: str, translator: Translator, pairs: tuple[list[str], list[str]], rule: str
) -> None:
    ensemble = Translator.from_checkpoints([checkpoint, checkpoint], device="cpu", rule=rule)
    assert isinstance(ensemble.model, Ensemble)
    single = score_pairs(translator, *pairs)
    both = score_pairs(ensemble, *pairs)
    assert [s.log_prob for s in both] == pytest.approx([s.log_prob for s in single], abs=1e-5)


@pytest.mark.parametrize("rule", ["logprob", "prob"])
def test_an_ensemble_scores_as_its_decoding_combines_the_models(
    translator: Translator, pairs: tuple[list[str], list[str]], rule: str
) -> None:
    """Two different members: the score is the sum of the combined log-probs of forced
    decoding steps (`decode_step`, `log_probs`: what search reads)."""
    other = copy.deepcopy(translator.model)
    with torch.no_grad():
        for weight in other.parameters():
            weight.add_(0.3 * torch.randn_like(weight))
    members = Ensemble([translator.model, other], rule)
    ensemble = Translator(members, translator.tokenizer, torch.device("cpu"))
    sources, targets = pairs[0][:5], pairs[1][:5]
    scores = score_pairs(ensemble, sources, targets)
    source_ids = ensemble.tokenizer.encode_src(sources)
    target_ids = ensemble.tokenizer.encode_tgt(targets)
    with torch.no_grad():
        expected = [
            teacher_force(ensemble.model, torch.tensor(src), len(src), tgt, ended=True)[0]
            for src, tgt in zip(source_ids, target_ids, strict=True)
        ]
    assert [s.log_prob for s in scores] == pytest.approx(expected, abs=1e-4)
    single = score_pairs(translator, sources, targets)
    assert all(abs(a.log_prob - b.log_prob) > 1e-3 for a, b in zip(scores, single, strict=True))


def test_line_count_mismatch_exits_2_naming_both_files(
    checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src, tgt = tmp_path / "three.de", tmp_path / "two.en"
    src.write_text("eins\nzwei\ndrei\n")
    tgt.write_text("one\ntwo\n")
    with pytest.raises(SystemExit) as exit_info:
        score_main(["--checkpoint", checkpoint, "--src", str(src), "--tgt", str(tgt)])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"--src {src} has 3 lines" in line and f"--tgt {tgt} has 2" in line


def test_tsv_and_jsonl_have_one_line_per_pair_in_order(
    checkpoint: str,
    translator: Translator,
    pairs: tuple[list[str], list[str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read 2 pairs at a time; the empty target of line 4 and blank source of line 6 keep
    their lines, warned about by number."""
    sources, targets = pairs[0][:7], pairs[1][:7]
    targets[3], sources[5] = "", "  "
    src, tgt = tmp_path / "in.de", tmp_path / "in.en"
    src.write_text("\n".join(sources) + "\n")
    tgt.write_text("\n".join(targets) + "\n")
    expected = score_pairs(translator, sources, targets)
    monkeypatch.setattr(score_module, "CHUNK_LINES", 2)
    common = ["--checkpoint", checkpoint, "--src", str(src), "--tgt", str(tgt)]
    with caplog.at_level(logging.WARNING):
        score_main([*common, "--output", str(tmp_path / "out.tsv")])
    score_main([*common, "--output", str(tmp_path / "out.jsonl"), "--format", "jsonl"])
    assert "line(s) 4" in caplog.text and "line(s) 6" in caplog.text

    rows = [line.split("\t") for line in (tmp_path / "out.tsv").read_text().splitlines()]
    assert len(rows) == 7
    assert [int(pieces) for _, _, pieces in rows] == [s.pieces for s in expected]
    assert [float(log_prob) for log_prob, _, _ in rows] == pytest.approx(
        [s.log_prob for s in expected], abs=1e-6, nan_ok=True
    )
    assert rows[3] == rows[5] == ["nan", "nan", "0"]
    assert all(len(per_piece.split(".")[1]) == 6 for _, per_piece, _ in rows if per_piece != "nan")

    objects = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["line"] for o in objects] == list(range(1, 8))
    assert [o["pieces"] for o in objects] == [s.pieces for s in expected]
    for line in (4, 6):
        assert objects[line - 1] == {"line": line, "log_prob": None, "per_piece": None, "pieces": 0}
    scored = [(o, s) for o, s in zip(objects, expected, strict=True) if o["pieces"]]
    assert all(math.isclose(o["per_piece"], s.per_piece, abs_tol=1e-5) for o, s in scored)


def test_forced_attention_is_the_attention_of_search(
    ending: Translator, pairs: tuple[list[str], list[str]]
) -> None:
    """Forced to output a search's own tokens, the model attends as it did in search (EOS's
    row too where the output ended)."""
    sources = pairs[0][:12]
    best = [r[0] for r in ending.translate_nbest(sources, beam_size=3, attention=True)]
    source_ids = ending.encode_sources(sources, first_line=1)
    forced = forced_attention(ending, source_ids, [t.tokens for t in best])
    for weights, translation in zip(forced, best, strict=True):
        rows = len(translation.attention)
        assert rows in (len(translation.tokens), len(translation.tokens) + 1)
        torch.testing.assert_close(weights[:rows], translation.attention, atol=1e-5, rtol=1e-4)


def test_pairs_align_alone_as_in_batches(
    translator: Translator, pairs: tuple[list[str], list[str]]
) -> None:
    """score_pairs' alignments (batches of at most 40 padded tokens) are each pair's own
    forced attention, aligned alone: one pair per target word."""
    sources, targets = pairs[0][:12], pairs[1][:12]
    scored = score_pairs(translator, sources, targets, alignment=True, batch_tokens=40)
    for source, target, score in zip(sources, targets, scored, strict=True):
        src_ids = translator.encode_sources([source], first_line=1)[0]
        tgt_ids = translator.tokenizer.encode_tgt([target])[0]
        (weights,) = forced_attention(translator, [src_ids], [tgt_ids])
        src_pieces = translator.tokenizer.src_pieces(source)[: len(src_ids)]
        expected = word_alignment(weights, src_pieces, translator.tokenizer.tgt_pieces(tgt_ids))
        assert score.alignment == expected
        assert [j for _, j in score.alignment] == list(range(len(target.split())))


def test_score_py_alignment_column_and_field(
    checkpoint: str, pairs: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    sources, targets = pairs[0][:5], pairs[1][:5]
    targets[2] = ""
    src, tgt = tmp_path / "in.de", tmp_path / "in.en"
    src.write_text("\n".join(sources) + "\n")
    tgt.write_text("\n".join(targets) + "\n")
    common = ["--checkpoint", checkpoint, "--src", str(src), "--tgt", str(tgt), "--alignment"]
    score_main([*common, "--output", str(tmp_path / "out.tsv")])
    score_main([*common, "--output", str(tmp_path / "out.jsonl"), "--format", "jsonl"])
    rows = [line.split("\t") for line in (tmp_path / "out.tsv").read_text().split("\n")[:-1]]
    objects = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row[3] for row in rows] == [o["alignment"] or "" for o in objects]
    for row, source, target in zip(rows, sources, targets, strict=True):
        pairs_found = [tuple(map(int, pair.split("-"))) for pair in row[3].split()]
        assert [j for _, j in pairs_found] == list(range(len(target.split())))
        assert all(0 <= i < len(source.split()) for i, _ in pairs_found)
    assert rows[2] == ["nan", "nan", "0", ""] and objects[2]["alignment"] is None
