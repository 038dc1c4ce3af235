"""Every config in configs/ parses with the real CLI (types and keys checked, nothing trained)."""

from pathlib import Path

import pytest
import yaml

from seq2seq.train import fit_and_test

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
