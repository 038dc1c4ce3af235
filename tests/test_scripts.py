"""The three scripts end to end on a tiny corpus: train in-process, then translate and evaluate.

Their handling of bad input is tested in `test_bad_input.py`.
"""

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seq2seq.cli.evaluate import main as evaluate_main
from seq2seq.cli.train import fit_and_test
from seq2seq.cli.translate import main as translate_main
from seq2seq.errors import UserError
from seq2seq.system import TranslationModule
from seq2seq.translator import Translator


def test_fast_dev_run(tmp_path: Path, train_args: Callable[..., list[str]]) -> None:
    cli = fit_and_test(train_args(tmp_path, "--trainer.fast_dev_run", "true"))
    assert cli.trainer.state.finished
    assert cli.model.model.decoder.output.out_features == cli.datamodule.tgt_vocab_size


@pytest.mark.parametrize(
    "limits",
    [
        ["--trainer.max_steps", "2"],  # stops mid-epoch, before any validation
        ["--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "2"],
        ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2"],
        ["--trainer.max_time", "00:00:00:01"],
        ["--trainer.max_steps", "3", "--trainer.val_check_interval", "2"],
    ],
)
def test_short_runs_end_cleanly(
    tmp_path: Path, train_args: Callable[..., list[str]], limits: list[str]
) -> None:
    """Early stopping and the plateau schedule act only after a validation."""
    cli = fit_and_test(train_args(tmp_path, "--trainer.limit_test_batches", "1", *limits))
    assert cli.trainer.state.finished


@pytest.mark.parametrize(("max_len_a", "warned"), [("0", True), ("10", False)])
def test_validation_warns_when_references_exceed_the_length_limit(
    tmp_path: Path,
    train_args: Callable[..., list[str]],
    caplog: pytest.LogCaptureFixture,
    max_len_a: str,
    warned: bool,
) -> None:
    """A limit of 0 * S + 2 pieces is shorter than every reference; 10 * S + 2 fits them."""
    limits = ["--model.max_len_a", max_len_a, "--model.max_len_b", "2"]
    with caplog.at_level(logging.WARNING, "seq2seq"):
        fit_and_test(train_args(tmp_path, "--trainer.fast_dev_run", "true", *limits))
    assert ("references are longer than the decoding length limit" in caplog.text) == warned


def test_training_writes_checkpoints_and_logs(trained: Path) -> None:
    """Under `--trainer.default_root_dir` alone: checkpoints/ with best.ckpt (the scored best
    under a stable name) and last.ckpt, and a CSV log."""
    folder = trained / "checkpoints"
    (scored,) = folder.glob("best-epoch*-step*-bleu*.ckpt")
    assert (folder / "best.ckpt").read_bytes() == scored.read_bytes()
    assert (folder / "last.ckpt").is_file()
    metrics = next(trained.glob("lightning_logs/version_*/metrics.csv")).read_text().splitlines()
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


def test_grad_norm_is_logged_at_the_step_it_was_measured(
    tmp_path: Path, train_args: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With log_every_n_steps 3, the rows Lightning writes (steps 2 and 5) carry those
    steps' own gradient norms (before clipping), not an earlier step's."""
    norms: dict[int, float] = {}
    hook = TranslationModule.on_before_optimizer_step

    def record(module: TranslationModule, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad.flatten() for p in module.parameters() if p.grad is not None]
        norms[module.global_step] = torch.cat(grads).norm().item()
        hook(module, optimizer)

    monkeypatch.setattr(TranslationModule, "on_before_optimizer_step", record)
    limits = ["--trainer.max_steps", "6", "--trainer.log_every_n_steps", "3"]
    limits += ["--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"]
    fit_and_test(train_args(tmp_path, *limits))
    with open(next(tmp_path.glob("**/metrics.csv")), newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["grad_norm"]]
    logged = {int(row["step"]): float(row["grad_norm"]) for row in rows}
    assert sorted(logged) == [2, 5]
    for step, value in logged.items():
        assert value == pytest.approx(norms[step], rel=1e-5)


def test_checkpoint_holds_everything_for_translation(trained: Path) -> None:
    checkpoint = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    assert set(checkpoint["tokenizer"]) == {"src", "tgt"}
    translator = Translator.from_checkpoint(trained / "checkpoints" / "best.ckpt", device="cpu")
    outputs = translator.translate(["einundzwanzig", "", "dreihundert"], beam_size=2)
    assert len(outputs) == 3 and outputs[1] == ""


def test_translator_precision(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    translator = Translator.from_checkpoint(trained / "checkpoints" / "best.ckpt", device="cpu")
    dtypes = []
    log_probs = translator.model.log_probs

    def spy(outputs: torch.Tensor) -> torch.Tensor:
        dtypes.append(outputs.dtype)
        return log_probs(outputs)

    monkeypatch.setattr(translator.model, "log_probs", spy)
    sentences = ["einundzwanzig", "", "dreihundert"]
    fp32 = translator.translate_nbest(sentences, beam_size=2, attention=True)
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    bf16 = translator.translate_nbest(sentences, beam_size=2, attention=True, precision="bf16")
    assert set(dtypes) == {torch.bfloat16}
    assert len(bf16) == 3 and bf16[1][0].text == ""
    for full, half in zip(fp32, bf16, strict=True):
        assert half[0].score == pytest.approx(full[0].score, abs=0.1)
        assert half[0].attention is None or half[0].attention.dtype == full[0].attention.dtype
    with pytest.raises(UserError, match="precision"):
        translator.translate(sentences, precision="16")


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
    bf16 = ["--checkpoint", checkpoint, "--src", source, "--ref", ref, "--json", "--greedy"]
    evaluate_main([*bf16, "--precision", "bf16"])
    assert set(json.loads(capsys.readouterr().out)) == {"BLEU", "chrF2", "TER"}
    assert set(in_one_go) == {"BLEU", "chrF2", "TER"}


def test_evaluate_scores_with_the_checkpoints_bleu_tokenizer(
    trained: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["bleu_tokenize"] = "char"
    char_ckpt = tmp_path / "char.ckpt"
    torch.save(checkpoint, char_ckpt)
    source, ref = str(tiny_corpus / "test.de"), str(tiny_corpus / "test.en")
    common = ["--checkpoint", str(char_ckpt), "--src", source, "--ref", ref, "--json"]
    evaluate_main([*common, "--greedy", "--metrics", "bleu"])
    assert "tok:char" in json.loads(capsys.readouterr().out)["BLEU"]["signature"]
    evaluate_main([*common, "--greedy", "--metrics", "bleu", "--tokenize", "13a"])
    assert "tok:13a" in json.loads(capsys.readouterr().out)["BLEU"]["signature"]


def test_training_test_scores_equal_translate_and_evaluate(
    tmp_path: Path,
    train_args: Callable[..., list[str]],
    tiny_corpus: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One score however it is computed, with test sources longer than the trained max_len
    (cut to it in both)."""
    limits = ("--trainer.max_epochs", "2", "--data.max_len", "12", "--model.test_beam_size", "3")
    fit_and_test(train_args(tmp_path, *limits, "--trainer.limit_train_batches", "5"))
    metrics = next(tmp_path.glob("**/metrics.csv")).read_text().splitlines()
    header, *rows = (line.split(",") for line in metrics)
    tested = next(row for row in rows if row[header.index("test_bleu")])
    checkpoint = str(tmp_path / "checkpoints" / "best.ckpt")
    source, ref = str(tiny_corpus / "test.de"), str(tiny_corpus / "test.en")
    capsys.readouterr()  # training's output
    with caplog.at_level(logging.WARNING, "seq2seq"):
        args = ["--checkpoint", checkpoint, "--src", source, "--ref", ref, "--json"]
        evaluate_main([*args, "--beam-size", "3", "--metrics", "bleu", "chrf"])
    assert "longer than 12 source pieces, truncated" in caplog.text
    scored = json.loads(capsys.readouterr().out)
    for metric, name in (("test_bleu", "BLEU"), ("test_chrf", "chrF2")):
        expected = float(tested[header.index(metric)])
        assert scored[name]["score"] == pytest.approx(expected, abs=0.01), metric


def test_best_ckpt_follows_each_new_best(
    tmp_path: Path, train_args: Callable[..., list[str]]
) -> None:
    """With several kept, best.ckpt is always the one of highest validation BLEU, as `--ckpt_path
    best` (the best that last.ckpt records) names it."""
    run = ["--trainer.max_epochs", "4", "--trainer.limit_train_batches", "2"]
    cli = fit_and_test(train_args(tmp_path, "--checkpoint.save_top_k", "-1", *run))
    folder = tmp_path / "checkpoints"
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert len(list(folder.glob("best-*.ckpt"))) == 4
    assert (folder / "best.ckpt").read_bytes() == best.read_bytes()
    assert not list(folder.glob(".*.tmp"))


def test_the_data_seed_follows_seed_everything(
    tmp_path: Path, train_args: Callable[..., list[str]]
) -> None:
    """`--seed_everything N` alone changes the batch order too; `--data.seed` still wins."""
    quick = ["--trainer.fast_dev_run", "true"]
    seeds = {
        args: fit_and_test(train_args(tmp_path / str(i), *quick, *args)).datamodule.seed
        for i, args in enumerate(
            [(), ("--seed_everything", "2"), ("--seed_everything", "2", "--data.seed", "7")]
        )
    }
    assert list(seeds.values()) == [1234, 2, 7]
