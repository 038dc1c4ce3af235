"""Every config in configs/ parses with the real CLI (types and keys checked, nothing trained)."""

import sys
from pathlib import Path

import datasets
import pytest
import yaml

from seq2seq.cli import train
from seq2seq.cli.train import DEMO_CONFIG, fit_and_test, main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert {p.stem for p in CONFIGS} >= {
        "demo",
        "multi30k_gru_luong_additive",
        "multi30k_lstm_luong_additive",
        "multi30k_gru_bahdanau",
        "multi30k_gru_noattn",
        "multi30k_lstm_noattn",
        "multi30k_best",
        "wmt14_de_en",
    }


def composed(config: Path) -> dict:
    """The settings a config file makes, read another way than jsonargparse: its `config:`
    base (a path relative to the file) first, then its sections and its dotted keys."""
    written = yaml.safe_load(config.read_text())
    settings = composed(config.parent / written.pop("config")) if "config" in written else {}
    for key, value in written.items():
        section, _, name = key.rpartition(".")
        if section:
            settings.setdefault(section, {})[name] = value
        elif isinstance(value, dict):
            settings.setdefault(key, {}).update(value)
        else:
            settings[key] = value
    return settings


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_parses(config: Path, capsys: pytest.CaptureFixture) -> None:
    assert config.read_text().startswith(
        f"# Launch: python scripts/train.py --config configs/{config.name}"
    )
    with pytest.raises(SystemExit) as exit_info:
        fit_and_test(["--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    settings = composed(config)
    for section in ("data", "model", "trainer"):
        for key, value in settings[section].items():
            assert printed[section][key] == value, f"{config.name}: {section}.{key}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_each_config_names_its_run_folder_once(config: Path) -> None:
    """Checkpoints and logs follow `trainer.default_root_dir` (runs/<config name>)."""
    text = config.read_text()
    assert composed(config)["trainer"]["default_root_dir"] == f"runs/{config.stem}"
    assert text.count("runs/") == 1 and "dirpath" not in text and "logger" not in text


def test_multi30k_variants_differ_from_their_base_in_a_few_lines() -> None:
    for config in CONFIGS:
        if config.stem.startswith("multi30k_"):
            settings = [line for line in config.read_text().splitlines() if line[:1] not in "#"]
            assert settings[0] == "config: base/multi30k.yaml" and len(settings) <= 5, config.name


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


def test_the_wmt14_config_trains_on_a_dataset_of_its_shape(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """configs/wmt14_de_en.yaml with `--data.dataset` pointed at a local `save_to_disk`
    folder shaped like wmt/wmt14 (splits train, validation, test; a `translation` column):
    the Hugging Face path end to end, offline."""
    splits = {}
    for name, split in (("train", "train"), ("val", "validation"), ("test", "test")):
        de, en = (
            (tiny_corpus / f"{name}.{lang}").read_text().splitlines() for lang in ("de", "en")
        )
        rows = [{"de": s, "en": t} for s, t in zip(de, en, strict=True)]
        splits[split] = datasets.Dataset.from_dict({"translation": rows})
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "wmt14"))
    config = next(c for c in CONFIGS if c.stem == "wmt14_de_en")
    tiny = ["--data.vocab_size", "60", "--data.num_proc", "1", "--data.max_tokens", "400"]
    tiny += ["--model.embed_dim", "16", "--model.hidden_size", "16"]
    tiny += ["--data.cache_dir", str(tmp_path / "cache"), "--trainer.fast_dev_run", "true"]
    dataset = ["--data.dataset", str(tmp_path / "wmt14")]
    cli = fit_and_test(
        ["--config", str(config), *dataset, *tiny, "--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.datamodule.hparams.dataset_config == "de-en"
    assert len(cli.datamodule.train_dataset) == len(splits["train"])
    assert "test_bleu" in cli.trainer.callback_metrics
