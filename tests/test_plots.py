"""Attention heat maps."""

from pathlib import Path

import numpy as np
import pytest

from seq2seq.plots import save_attention_plot


def png_width(path: Path) -> int:
    """The width field of a PNG's IHDR chunk."""
    return int.from_bytes(path.read_bytes()[16:20], "big")


def test_writes_a_png_sized_by_the_sentence(tmp_path: Path) -> None:
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    save_attention_plot(np.eye(3), ["a", "b", "c"], ["x", "y", "</s>"], small)
    weights = np.random.default_rng(0).dirichlet(np.ones(30), size=20)
    save_attention_plot(weights, [f"s{i}" for i in range(30)], [f"t{i}" for i in range(20)], large)
    for path in (small, large):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png_width(large) > png_width(small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large.png", "small.png"]


def test_labels_must_fit_the_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        save_attention_plot(np.eye(3), ["a", "b"], ["x", "y", "z"], tmp_path / "x.png")
