"""`diagnose.py gradients` on the tiny trained model: its CSV holds what
`seq2seq.gradients` measures directly; bad input is one `error:` line."""

import csv
from pathlib import Path

import pytest
import torch

from seq2seq.batching import collate
from seq2seq.cli.diagnose import main
from seq2seq.gradients import by_distance_from_end, encoder_state_gradient_norms
from seq2seq.translator import Translator

PNG = b"\x89PNG\r\n\x1a\n"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def direct_curve(
    checkpoint: Path, sources: list[str], references: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S,) the curve of all pairs in one batch, sources cut to the checkpoint's max_len, and
    (B,) their source lengths."""
    translator = Translator.from_checkpoint(checkpoint, device="cpu")
    model, tokenizer = translator.model, translator.tokenizer
    pairs = zip(tokenizer.encode_src(sources), tokenizer.encode_tgt(references), strict=True)
    examples = [{"src_ids": s, "tgt_ids": t, "index": i} for i, (s, t) in enumerate(pairs)]
    ids = {"pad_id": model.pad_id, "bos_id": model.bos_id, "eos_id": model.eos_id}
    batch = collate(examples, **ids, max_src_len=translator.max_src_len)
    keys = ("src", "src_lengths", "tgt_in", "tgt_out")
    norms = encoder_state_gradient_norms(model, *(batch[key] for key in keys))
    return by_distance_from_end(norms, batch["src_lengths"]), batch["src_lengths"]


def test_writes_the_curve_that_seq2seq_gradients_measures(
    trained: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint, out = trained / "checkpoints" / "best.ckpt", tmp_path / "out"
    src, ref = tiny_corpus / "test.de", tiny_corpus / "test.en"
    files = ["--checkpoint", str(checkpoint), "--src", str(src), "--ref", str(ref)]
    main(["gradients", *files, "--output", str(out), "--sentences", "20", "--device", "cpu"])
    rows = read_rows(out / "gradients.csv")
    sources, references = (path.read_text().splitlines()[:20] for path in (src, ref))
    expected, lengths = direct_curve(checkpoint, sources, references)
    assert [int(row["distance"]) for row in rows] == list(range(int(lengths.max())))
    assert {row["checkpoint"] for row in rows} == {str(checkpoint)}
    for row in rows:
        distance = int(row["distance"])
        assert float(row["mean_norm"]) == pytest.approx(expected[distance].item(), rel=1e-5)
        assert int(row["sentences"]) == int((lengths > distance).sum())
    assert int(rows[0]["sentences"]) == 20
    assert (out / "gradients.png").read_bytes()[:8] == PNG
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].split() == ["distance", str(checkpoint)]
    assert printed[2].split()[0] == "0" and printed[-1].startswith("wrote ")


def test_several_checkpoints_give_one_curve_each(
    trained: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    folder = trained / "checkpoints"
    pairs = ["--src", str(tiny_corpus / "test.de"), "--ref", str(tiny_corpus / "test.en")]
    checkpoints = ["--checkpoint", str(folder / "best.ckpt"), str(folder / "last.ckpt")]
    out = ["--output", str(tmp_path), "--sentences", "8", "--labels", "best", "last"]
    main(["gradients", *checkpoints, *pairs, *out])
    rows = read_rows(tmp_path / "gradients.csv")
    assert [row["checkpoint"] for row in rows][:: len(rows) // 2] == ["best", "last"]
    assert (tmp_path / "gradients.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--checkpoint": "{tmp}/missing.ckpt"}, "checkpoint not found: {tmp}/missing.ckpt"),
        ({"--src": "{tmp}/missing.de"}, "cannot read {tmp}/missing.de"),
        ({"--ref": "{tmp}/short.en"}, "line counts differ"),
        ({"--src": "{tmp}/empty.de", "--ref": "{tmp}/empty.en"}, "is empty"),
        ({"--sentences": "0"}, "--sentences must be at least 1"),
        ({"--labels": "a b"}, "2 --labels for 1 checkpoints"),
        ({"--output": "{tmp}/short.en"}, "is a file, not a folder"),
    ],
)
def test_bad_input_is_one_error_line(
    trained: Path,
    tiny_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    change: dict[str, str],
    message: str,
) -> None:
    (tmp_path / "short.en").write_text("one\n")
    for name in ("empty.de", "empty.en"):
        (tmp_path / name).write_text("")
    options = {
        "--checkpoint": str(trained / "checkpoints" / "best.ckpt"),
        "--src": str(tiny_corpus / "test.de"),
        "--ref": str(tiny_corpus / "test.en"),
        "--output": str(tmp_path / "out"),
    } | {name: value.format(tmp=tmp_path) for name, value in change.items()}
    argv = ["gradients"] + [
        part for name, value in options.items() for part in (name, *value.split())
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert stderr == [f"error: {stderr[0].removeprefix('error: ')}"]
    assert message.format(tmp=tmp_path) in stderr[0]
    assert not (tmp_path / "out").exists()
