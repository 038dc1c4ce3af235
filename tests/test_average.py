"""Checkpoint averaging: the mean of the weights, refusals of checkpoints that do not go
together, the choice of a run's best or last checkpoints, and the script end to end."""

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from seq2seq.checkpoint import (
    average_checkpoints,
    check_architecture,
    load_checkpoint,
    load_weights,
    run_checkpoints,
    unpack_tokenizer,
)
from seq2seq.cli.average import main
from seq2seq.errors import UserError
from seq2seq.system import TranslationModule
from seq2seq.tokenizer import Tokenizer
from seq2seq.translator import Translator

# Names as `--checkpoint.filename`'s default writes them: (file, BLEU, step).
KEPT_NAMES = (
    "best-epoch0-step3-bleu1.50.ckpt",
    "best-epoch1-step6-bleu2.25.ckpt",
    "best-epoch2-step9-bleu0.75.ckpt",
)


@pytest.fixture
def best(trained: Path) -> Path:
    return trained / "checkpoints" / "best.ckpt"


def saved_variant(source: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """`source` loaded, changed in memory by `change`, saved as `target`."""
    checkpoint = load_checkpoint(source)
    change(checkpoint)
    torch.save(checkpoint, target)
    return target


def perturb_weights(checkpoint: dict[str, Any]) -> None:
    state = checkpoint["state_dict"]
    for key, tensor in state.items():
        if tensor.is_floating_point():
            state[key] = tensor + torch.randn_like(tensor)


def test_averaging_copies_of_one_checkpoint_gives_its_weights(best: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copy(best, tmp_path / "copy.ckpt"))
    averaged = average_checkpoints([best, copy])
    weights = load_checkpoint(best)["state_dict"]
    assert averaged["state_dict"].keys() == weights.keys()
    for key, tensor in weights.items():
        assert averaged["state_dict"][key].dtype == tensor.dtype
        assert torch.equal(averaged["state_dict"][key], tensor), key
    assert averaged["averaged_from"] == [str(best), str(copy)]
    assert "optimizer_states" not in averaged and "callbacks" not in averaged


def test_averaging_two_checkpoints_gives_their_mean(best: Path, tmp_path: Path) -> None:
    other = saved_variant(best, tmp_path / "other.ckpt", perturb_weights)
    averaged = average_checkpoints([best, other])["state_dict"]
    a, b = load_checkpoint(best)["state_dict"], load_checkpoint(other)["state_dict"]
    for key in a:
        mean = ((a[key].double() + b[key].double()) / 2).to(a[key].dtype)
        assert torch.equal(averaged[key], mean), key
        assert not torch.equal(averaged[key], a[key]), key


def test_averaged_checkpoint_translates_and_starts_a_fine_tuning(
    trained: Path, best: Path, tmp_path: Path
) -> None:
    output = tmp_path / "avg.ckpt"
    torch.save(average_checkpoints([best, trained / "checkpoints" / "last.ckpt"]), output)
    translator = Translator.from_checkpoint(output, device="cpu")
    outputs = translator.translate(["dreiundzwanzig", "einhundertvier"], beam_size=1)
    assert len(outputs) == 2 and all(isinstance(text, str) for text in outputs)
    checkpoint = load_checkpoint(output)  # what --init_from reads
    hparams = checkpoint["hyper_parameters"]
    check_architecture(hparams, dict(hparams), refusal="--init_from", saved_name="its")
    assert unpack_tokenizer(checkpoint, tmp_path / "cache")[0].is_file()
    module = TranslationModule(**{k: v for k, v in hparams.items() if k != "_instantiator"})
    load_weights(module, checkpoint, str(output))
    for key, tensor in module.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][key]), key


def other_tokenizer(checkpoint: dict[str, Any]) -> None:
    sentences = [f"wort{i} zahl{i % 7}" for i in range(200)]
    checkpoint["tokenizer"] = Tokenizer.train(sentences, sentences, vocab_size=30).to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["hyper_parameters"].update(hidden_size=24), r"model\.hidden_size is 24"),
        (other_tokenizer, "SentencePiece model"),
        (lambda c: c["state_dict"].popitem(), "weights differ in names or shapes"),
    ],
    ids=["architecture", "tokenizer", "weights"],
)
def test_checkpoints_that_do_not_go_together_are_refused(
    best: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    other = saved_variant(best, tmp_path / "other.ckpt", change)
    with pytest.raises(UserError, match=message) as refused:
        average_checkpoints([best, other])
    text = str(refused.value)
    assert "\n" not in text and str(other) in text and str(best) in text


def test_run_checkpoints_chooses_by_bleu_or_by_step(best: Path, tmp_path: Path) -> None:
    for name in (*KEPT_NAMES, "last.ckpt"):
        shutil.copy(best, tmp_path / name)
    chosen = [path.name for path in run_checkpoints(tmp_path, best=2, last=None)]
    assert chosen == [KEPT_NAMES[1], KEPT_NAMES[0]]
    assert run_checkpoints(tmp_path, best=None, last=1) == [tmp_path / KEPT_NAMES[2]]
    with pytest.raises(UserError, match=r"holds 3 checkpoint\(s\).*--last 4"):
        run_checkpoints(tmp_path, best=None, last=4)


def test_script_averages_a_run_into_one_file(
    best: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in KEPT_NAMES:
        shutil.copy(best, run / name)
    output = tmp_path / "avg.ckpt"
    main(["--run-dir", str(run), "--best", "2", "--output", str(output)])  # returns: exit 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"averaged {run / KEPT_NAMES[1]}",
        f"averaged {run / KEPT_NAMES[0]}",
        f"wrote {output}: the mean weights of 2 checkpoint(s)",
    ]
    assert load_checkpoint(output)["averaged_from"] == [str(run / n) for n in KEPT_NAMES[1::-1]]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["avg.ckpt", "run"]  # no temp


def test_script_reports_a_missing_input_in_one_line(
    best: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing, output = tmp_path / "missing.ckpt", tmp_path / "avg.ckpt"
    with pytest.raises(SystemExit) as exited:
        main(["--inputs", str(best), str(missing), "--output", str(output)])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"error: checkpoint not found: {missing}\n"
    assert not output.exists()
