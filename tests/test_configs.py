"""Every config in configs/ parses with the real CLI (types and keys checked, nothing trained)."""

import sys
from pathlib import Path

import pytest
import yaml

from seq2seq.cli import train
from seq2seq.cli.train import DEMO_CONFIG, fit_and_test, main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert {p.stem for p in CONFIGS} >= {
        "demo",
        "multi30k_gru_bahdanau",
        "multi30k_lstm_bahdanau",
        "multi30k_gru_noattn",
        "multi30k_lstm_noattn",
    }


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_parses(config: Path, capsys: pytest.CaptureFixture) -> None:
    assert config.read_text().startswith(
        f"# Launch: python scripts/train.py --config configs/{config.name}"
    )
    with pytest.raises(SystemExit) as exit_info:
        fit_and_test(["--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    written = yaml.safe_load(config.read_text())
    for section in ("data", "model"):
        for key, value in written[section].items():
            assert printed[section][key] == value, f"{config.name}: {section}.{key}"


def test_demo_config_generates_its_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(DEMO_CONFIG), "--print_config"])
    assert exit_info.value.code == 0
    for split in ("train", "val", "test"):
        de, en = (tmp_path / "data" / "demo" / f"{split}.{lang}" for lang in ("de", "en"))
        assert len(de.read_text().splitlines()) == len(en.read_text().splitlines()) > 100


def test_bare_command_outside_a_checkout_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Installed without its checkout, the bare command cannot find configs/demo.yaml."""
    monkeypatch.setattr(train, "DEMO_CONFIG", tmp_path / "configs" / "demo.yaml")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "demo config" in error and "give --config" in error


def test_options_without_a_config_apply_on_top_of_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--trainer.max_epochs", "1", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["train"] == "data/demo/train"
    assert printed["trainer"]["max_epochs"] == 1
    assert (
        printed["model"]["max_len_a"]
        == yaml.safe_load(DEMO_CONFIG.read_text())["model"]["max_len_a"]
    )
