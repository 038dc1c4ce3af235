"""The three scripts end to end on a tiny corpus: train in-process, then translate and evaluate."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seq2seq.errors import UserError
from seq2seq.evaluate import main as evaluate_main
from seq2seq.train import fit_and_test
from seq2seq.translate import main as translate_main
from seq2seq.translator import Translator

ROOT = Path(__file__).resolve().parents[1]


def test_fast_dev_run(tmp_path: Path, train_args: Callable[..., list[str]]) -> None:
    cli = fit_and_test(train_args(tmp_path, "--trainer.fast_dev_run", "true"))
    assert cli.trainer.state.finished
    assert cli.model.model.decoder.output.out_features == cli.datamodule.tgt_vocab_size


def test_training_writes_checkpoints_and_logs(trained: Path) -> None:
    assert (trained / "checkpoints" / "best.ckpt").is_file()
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    metrics = next(trained.glob("**/metrics.csv")).read_text().splitlines()
    header = metrics[0].split(",")
    for name in (
        "train_loss",
        "grad_norm",
        "val_loss",
        "val_ppl",
        "val_bleu",
        "test_bleu",
        "test_chrf",
    ):
        assert name in header
    assert list(trained.glob("**/spm.*model")), "SentencePiece model not written into the run"


def test_checkpoint_holds_everything_for_translation(trained: Path) -> None:
    checkpoint = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    assert set(checkpoint["tokenizer"]) == {"src", "tgt"}
    translator = Translator.from_checkpoint(trained / "checkpoints" / "best.ckpt", device="cpu")
    outputs = translator.translate(["einundzwanzig", "", "dreihundert"], beam_size=2)
    assert len(outputs) == 3 and outputs[1] == ""


def test_translate_and_evaluate_scripts(
    trained: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    hyp = tmp_path / "hyp.en"
    source = tiny_corpus / "test.de"
    translate_main(
        [
            "--checkpoint",
            str(trained / "checkpoints" / "best.ckpt"),
            "--input",
            str(source),
            "--output",
            str(hyp),
            "--beam-size",
            "3",
        ]
    )
    assert len(hyp.read_text().splitlines()) == len(source.read_text().splitlines())
    evaluate_main(["--hyp", str(hyp), "--ref", str(tiny_corpus / "test.en")])
    printed = capsys.readouterr().out
    assert "BLEU = " in printed and "chrF2 = " in printed and "signature: nrefs:1" in printed


def test_evaluate_can_translate_and_score_in_one_go(
    trained: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint, hyp = str(trained / "checkpoints" / "best.ckpt"), tmp_path / "hyp.en"
    source, ref = str(tiny_corpus / "test.de"), str(tiny_corpus / "test.en")
    translate_main(
        ["--checkpoint", checkpoint, "--input", source, "--output", str(hyp), "--greedy"]
    )
    evaluate_main(["--hyp", str(hyp), "--ref", ref, "--json"])
    from_file = json.loads(capsys.readouterr().out)
    evaluate_main(["--checkpoint", checkpoint, "--src", source, "--ref", ref, "--json", "--greedy"])
    in_one_go = json.loads(capsys.readouterr().out)
    assert in_one_go == from_file
    assert set(in_one_go) == {"BLEU", "chrF2", "TER"}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def assert_user_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit status 2, no traceback, and the message names what is wrong."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for text in expected:
        assert text in last, last


def test_missing_training_file(tmp_path: Path, train_args: Callable[..., list[str]]) -> None:
    args = train_args(tmp_path)
    args[args.index("--data.train") + 1] = str(tmp_path / "nowhere")
    assert_user_error(run_script("train", *args), str(tmp_path / "nowhere"))


def test_line_count_mismatch(tmp_path: Path, train_args: Callable[..., list[str]]) -> None:
    (tmp_path / "bad.de").write_text("eins\nzwei\ndrei\n")
    (tmp_path / "bad.en").write_text("one\ntwo\n")
    args = train_args(tmp_path)
    args[args.index("--data.train") + 1] = str(tmp_path / "bad")
    assert_user_error(run_script("train", *args), "bad.de", "bad.en", "3", "2")


def test_empty_corpus_after_cleaning(tmp_path: Path, train_args: Callable[..., list[str]]) -> None:
    (tmp_path / "empty.de").write_text("\n  \neins\n")
    (tmp_path / "empty.en").write_text("one\ntwo\n\n")
    args = train_args(tmp_path)
    args[args.index("--data.train") + 1] = str(tmp_path / "empty")
    assert_user_error(run_script("train", *args), "empty")


def test_unknown_config_key(tmp_path: Path, train_args: Callable[..., list[str]]) -> None:
    result = run_script("train", *train_args(tmp_path), "--model.hiden_size", "8")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hiden_size" in result.stderr


def test_translate_with_missing_checkpoint(tmp_path: Path) -> None:
    result = run_script("translate", "--checkpoint", str(tmp_path / "none.ckpt"), "--input", "-")
    assert_user_error(result, "none.ckpt")


def test_evaluate_line_count_mismatch(tmp_path: Path) -> None:
    (tmp_path / "h").write_text("a\nb\n")
    (tmp_path / "r").write_text("a\n")
    result = run_script("evaluate", "--hyp", str(tmp_path / "h"), "--ref", str(tmp_path / "r"))
    assert_user_error(result, str(tmp_path / "h"), str(tmp_path / "r"), "2", "1")


def test_bad_checkpoints_are_refused_clearly(trained: Path, tmp_path: Path) -> None:
    good = (trained / "checkpoints" / "best.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.ckpt").write_text("not a checkpoint\n")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    expected = {
        "truncated.ckpt": "not a PyTorch checkpoint",
        "text.ckpt": "not a PyTorch checkpoint",
        "other.ckpt": "not a seq2seq training checkpoint",
    }
    for name, message in expected.items():
        with pytest.raises(UserError, match=message):
            Translator.from_checkpoint(tmp_path / name)
