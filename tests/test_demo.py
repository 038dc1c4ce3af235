"""The demo corpus: disjoint splits from one distribution, written once per version."""

from pathlib import Path

import numpy as np

from seq2seq import demo


def test_splits_are_disjoint_and_alike() -> None:
    splits = demo.split_numbers(demo.SPLITS, seed=1)
    assert {name: len(numbers) for name, numbers in splits.items()} == demo.SPLITS
    train, val, test = (set(splits[name]) for name in ("train", "val", "test"))
    assert len(train) == 12000 and not train & val and not train & test and not val & test
    small = {name: np.mean(np.array(numbers) < 1000) for name, numbers in splits.items()}
    # The held-out sets do not take the small numbers away from training (they once held
    # 38% of the test set and 6% of train): the shares differ by sampling noise only.
    assert abs(small["test"] - small["train"]) < 0.04
    assert abs(small["val"] - small["train"]) < 0.04
    assert sum(n < 10 for n in splits["train"]) >= 7  # most single digits are trained on


def test_corpus_is_rewritten_only_for_another_version(tmp_path: Path) -> None:
    sizes = {"train": 50, "val": 5, "test": 5}
    out = demo.write_demo_corpus(tmp_path, seed=3, sizes=sizes)
    train_de = out / "train.de"
    assert len(train_de.read_text(encoding="utf-8").splitlines()) == 50
    train_de.write_text("edited\n", encoding="utf-8")
    demo.write_demo_corpus(tmp_path, seed=3, sizes=sizes)
    assert train_de.read_text(encoding="utf-8") == "edited\n"  # this version's: kept
    (out / demo.STAMP).write_text("1")
    demo.write_demo_corpus(tmp_path, seed=3, sizes=sizes)
    assert len(train_de.read_text(encoding="utf-8").splitlines()) == 50  # older: rewritten
