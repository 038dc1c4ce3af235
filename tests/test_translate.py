"""translate.py on files users really have: every line kept, n-best, plots, interruptions."""

import json
import logging
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seq2seq.alignment import pharaoh
from seq2seq.cli import translate as translate_module
from seq2seq.cli.translate import main as translate_main
from seq2seq.errors import UserError
from seq2seq.sampling import Sampling
from seq2seq.search import beam_search
from seq2seq.translator import Translator

TRANSLATE = [sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "translate.py")]


@pytest.fixture(scope="module")
def checkpoint(trained: Path) -> str:
    return str(trained / "checkpoints" / "best.ckpt")


@pytest.fixture
def mixed_input(tiny_corpus: Path, tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Real sentences with an empty, a blank, a 3000-word and an invalid UTF-8 line among them."""
    real = (tiny_corpus / "train.de").read_bytes().splitlines()[:40]
    lines = [
        *real[:10],
        b"",
        *real[10:20],
        b"   ",
        b" ".join([b"dreizehn"] * 3000),
        *real[20:30],
        b"zw\xe4lf und drei\xff",
        *real[30:],
    ]
    path = tmp_path / "mixed.de"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, lines


def test_one_output_line_per_input_line(
    checkpoint: str,
    mixed_input: tuple[Path, list[bytes]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, lines = mixed_input
    out = tmp_path / "out.en"
    with caplog.at_level(logging.WARNING):
        translate_main(
            [
                "--checkpoint",
                checkpoint,
                "--input",
                str(source),
                "--output",
                str(out),
                "--beam-size",
                "3",
            ]
        )
    outputs = out.read_text(encoding="utf-8").split("\n")
    assert outputs[-1] == "" and len(outputs) - 1 == len(lines)
    for line, output in zip(lines, outputs, strict=False):
        assert (output == "") == (line.strip() == b""), (line[:40], output)
    long_line = lines.index(b" ".join([b"dreizehn"] * 3000)) + 1
    bad_line = lines.index(b"zw\xe4lf und drei\xff") + 1
    assert f"line(s) {long_line}" in caplog.text and "truncated" in caplog.text
    assert f"invalid UTF-8 on line(s) {bad_line}" in caplog.text


def test_stdin_to_stdout(checkpoint: str) -> None:
    result = subprocess.run(
        [
            *TRANSLATE,
            "--checkpoint",
            checkpoint,
            "--greedy",
        ],
        input="einundzwanzig\n\ndreihundert\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.split("\n")
    assert len(outputs) == 4 and outputs[1] == "" and outputs[0] and outputs[2]


def test_translating_loads_no_training_libraries(checkpoint: str) -> None:
    """Start-up time: translating imports neither Lightning nor the data or plotting stack."""
    heavy = ("lightning", "datasets", "pyarrow", "pandas", "matplotlib", "sacrebleu")
    code = (
        "import sys\n"
        "from seq2seq.cli.translate import main\n"
        f"main(['--checkpoint', {checkpoint!r}, '--greedy'])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input="einundzwanzig\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "no translation written"
    assert result.stderr.splitlines()[-1] == "[]"


def test_nbest_text_and_jsonl(checkpoint: str, tiny_corpus: Path, tmp_path: Path) -> None:
    source = tmp_path / "src.de"
    source.write_text("\n".join((tiny_corpus / "test.de").read_text().splitlines()[:8]) + "\n\n")
    common = [
        "--checkpoint",
        checkpoint,
        "--input",
        str(source),
        "--beam-size",
        "4",
        "--nbest",
        "3",
    ]
    translate_main([*common, "--output", str(tmp_path / "nbest.txt")])
    rows = (tmp_path / "nbest.txt").read_text().splitlines()
    assert len(rows) == 9 * 3
    for start in range(0, 24, 3):
        scores = [float(row.split("\t")[0]) for row in rows[start : start + 3]]
        texts = [row.split("\t", 1)[1] for row in rows[start : start + 3]]
        assert scores == sorted(scores, reverse=True)
        assert all(texts)
    translate_main([*common, "--output", str(tmp_path / "nbest.jsonl"), "--format", "jsonl"])
    objects = [json.loads(row) for row in (tmp_path / "nbest.jsonl").read_text().splitlines()]
    assert [(o["line"], o["rank"]) for o in objects] == [
        (n, r) for n in range(1, 10) for r in (1, 2, 3)
    ]
    assert [o["text"] for o in objects] == [row.split("\t", 1)[1] for row in rows]


def test_coverage_penalty_through_the_translator(checkpoint: str, tiny_corpus: Path) -> None:
    """The Translator ranks as beam search does with the penalty (its batch padded as the
    Translator pads it), and refuses what cannot apply."""
    translator = Translator.from_checkpoint(checkpoint)
    sentences = (tiny_corpus / "test.de").read_text().splitlines()[:6]
    options = {"coverage_penalty": "wu", "beta": 0.4}
    found = translator.translate_nbest(sentences, beam_size=3, nbest=2, **options)
    ids = translator.encode_sources(sentences, first_line=1)
    for sentence_ids, ranked in zip(ids, found, strict=True):
        src, src_lengths = translator.pad([sentence_ids])
        (expected,) = beam_search(
            translator.model, src, src_lengths, beam_size=3, nbest=2, **options
        )
        assert [t.tokens for t in ranked] == [h.tokens for h in expected]
        assert [t.score for t in ranked] == pytest.approx([h.score for h in expected], rel=1e-5)
    for bad, message in [
        ({"coverage_penalty": "summary", "beta": 0.2}, "coverage_penalty must be one of"),
        ({"coverage_penalty": "wu", "beta": -0.2}, "beta must be at least 0"),
        ({**options, "sampling": Sampling()}, "sampling ranks none"),
    ]:
        with pytest.raises(UserError, match=message):
            translator.translate_nbest(sentences, **bad)


def test_alignment_column_and_field(checkpoint: str, tiny_corpus: Path, tmp_path: Path) -> None:
    """One Pharaoh pair per output word (the words of its text), source words in range, the
    same in text and jsonl and as the Python API gives them; an empty line aligns nothing."""
    sources = [*(tiny_corpus / "test.de").read_text().splitlines()[:6], ""]
    source = tmp_path / "src.de"
    source.write_text("\n".join(sources) + "\n")
    common = ["--checkpoint", checkpoint, "--input", str(source), "--beam-size", "3"]
    common += ["--nbest", "2", "--alignment"]
    translate_main([*common, "--output", str(tmp_path / "out.tsv")])
    translate_main([*common, "--output", str(tmp_path / "out.jsonl"), "--format", "jsonl"])
    rows = [row.split("\t") for row in (tmp_path / "out.tsv").read_text().split("\n")[:-1]]
    objects = [json.loads(row) for row in (tmp_path / "out.jsonl").read_text().splitlines()]

    translator = Translator.from_checkpoint(checkpoint)
    found = translator.translate_nbest(sources, beam_size=3, nbest=2, attention=True)
    each = zip(sources, found, strict=True)
    expected = [pharaoh(translator.alignment(s, t)) for s, ranked in each for t in ranked]
    assert [row[2] for row in rows] == [o["alignment"] for o in objects] == expected
    for (_, text, alignment), line in zip(rows, [s for s in sources for _ in "ab"], strict=True):
        pairs = [tuple(map(int, pair.split("-"))) for pair in alignment.split()]
        assert [output for _, output in pairs] == list(range(len(text.split())))
        assert all(0 <= source_word < len(line.split()) for source_word, _ in pairs)
    assert rows[-1] == ["0.000000", "", ""]


def test_attention_plots(checkpoint: str, tiny_corpus: Path, tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    plots.mkdir()
    translate_main(
        [
            "--checkpoint",
            checkpoint,
            "--input",
            str(tiny_corpus / "test.de"),
            "--output",
            str(tmp_path / "out"),
            "--attention-plot",
            str(plots),
            "--attention-plot-count",
            "3",
        ]
    )
    assert sorted(p.name for p in plots.iterdir()) == ["00001.png", "00002.png", "00003.png"]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_leaves_no_output(
    checkpoint: str, tiny_corpus: Path, tmp_path: Path, signum: int, status: int
) -> None:
    source, out = tmp_path / "big.de", tmp_path / "out.en"
    source.write_text((tiny_corpus / "train.de").read_text() * 100)
    process = subprocess.Popen(
        [
            *TRANSLATE,
            "--checkpoint",
            checkpoint,
            "--input",
            str(source),
            "--output",
            str(out),
            "--progress",
            "--batch-tokens",
            "64",
        ],
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT as from a terminal, even where the tests run with SIGINT ignored (in a
        # script's background job): Python keeps an inherited SIG_IGN.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen, deadline = "", time.monotonic() + 120
    while "sent/s" not in seen and time.monotonic() < deadline:  # the progress bar has started
        seen += process.stderr.read(1)
    process.send_signal(signum)
    stderr = seen + process.communicate(timeout=60)[1]
    assert process.returncode == status, stderr[-500:]
    assert stderr.strip().splitlines()[-1].endswith("no output written")
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == [source]


def test_length_limit_comes_from_the_checkpoint_and_cut_outputs_are_named(
    checkpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = torch.load(checkpoint, weights_only=True)
    state["hyper_parameters"] |= {"max_len_a": 2.5, "max_len_b": 7}  # as if trained with them
    torch.save(state, tmp_path / "limits.ckpt")
    translator = Translator.from_checkpoint(tmp_path / "limits.ckpt", device="cpu")
    assert (translator.max_len_a, translator.max_len_b) == (2.5, 7)
    sentences = ["einundzwanzig", "", "dreihundertzwölf"]
    with caplog.at_level(logging.WARNING, "seq2seq"):
        cut = translator.translate_nbest(sentences, beam_size=2, max_len_a=0.0, max_len_b=1)
    assert [len(ranked[0].tokens) for ranked in cut] == [1, 0, 1]
    assert "2 output(s) stopped at the length limit 0 * source pieces + 1" in caplog.text
    assert "line(s) 1, 3" in caplog.text


def test_chunks_keep_every_line_in_order(
    checkpoint: str, mixed_input: tuple[Path, list[bytes]], tmp_path: Path, monkeypatch
) -> None:
    """Read, translated and written 7 lines at a time: the same output as all at once."""
    source, lines = mixed_input
    whole, chunked = tmp_path / "whole.jsonl", tmp_path / "chunked.jsonl"
    common = ["--checkpoint", checkpoint, "--input", str(source), "--format", "jsonl"]
    translate_main([*common, "--output", str(whole), "--nbest", "2"])
    sizes = []
    translate_nbest = Translator.translate_nbest

    def spy(self: Translator, sentences: list[str], **options) -> list:
        sizes.append(len(sentences))
        return translate_nbest(self, sentences, **options)

    monkeypatch.setattr(translate_module, "CHUNK_LINES", 7)
    monkeypatch.setattr(Translator, "translate_nbest", spy)
    translate_main([*common, "--output", str(chunked), "--nbest", "2"])
    assert max(sizes) == 7 and sum(sizes) == len(lines)
    rows = [[json.loads(row) for row in path.read_text().splitlines()] for path in (whole, chunked)]
    assert [(r["line"], r["rank"], r["text"]) for r in rows[1]] == [
        (r["line"], r["rank"], r["text"]) for r in rows[0]
    ]  # the scores differ only by float rounding in other batches
    assert [r["score"] for r in rows[1]] == pytest.approx([r["score"] for r in rows[0]], abs=1e-5)
    assert [r["line"] for r in rows[1]] == [n for n in range(1, len(lines) + 1) for _ in range(2)]


def test_interactive_answers_each_line_before_the_next(checkpoint: str) -> None:
    process = subprocess.Popen(
        [*TRANSLATE, "--checkpoint", checkpoint, "--interactive", "--greedy"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        answers = []
        for line in (b"einundzwanzig\n", b"\n", b"dreihundert\n"):
            process.stdin.write(line)
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, f"no answer to {line!r} while stdin stays open"
            answers.append(process.stdout.readline())
        assert answers[1] == b"\n" and all(a.endswith(b"\n") for a in answers)
    finally:
        process.stdin.close()
        process.wait(timeout=60)
    assert process.returncode == 0
