"""Attention heat maps, gradient flow, training curves and scores over time."""

from pathlib import Path

import numpy as np
import pytest

from seq2seq.errors import UserError
from seq2seq.plots import (
    check_labels,
    mean_and_sd,
    save_attention_plot,
    save_gradient_flow_plot,
    save_metrics_plot,
    save_score_over_time_plot,
)


def png_width(path: Path) -> int:
    """The width field of a PNG's IHDR chunk."""
    return int.from_bytes(path.read_bytes()[16:20], "big")


def png_height(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "big")


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


def test_gradient_flow_plot(tmp_path: Path) -> None:
    curves = {"gru": np.geomspace(1.0, 0.5, 30), "rnn": np.geomspace(1.0, 1e-6, 20)}
    save_gradient_flow_plot(curves, tmp_path / "flow.png")
    assert (tmp_path / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["flow.png"]


def test_metrics_plot_draws_what_is_logged(tmp_path: Path) -> None:
    steps = np.arange(50)
    logged = {"train_loss": (steps, 5.0 / (1 + steps)), "grad_norm": (steps, np.ones(50))}
    flow = {"grad_flow/far_over_near": (steps[::10], np.full(5, 0.1))}
    runs = {"a": logged, "b": {"val_bleu": (steps[::10], steps[::10] / 2.0)} | flow}
    save_metrics_plot(runs, tmp_path / "five.png")  # with the gradient flow panel
    save_metrics_plot({"a": logged}, tmp_path / "four.png")
    assert png_height(tmp_path / "five.png") > png_height(tmp_path / "four.png")


def test_labels_must_match_and_differ() -> None:
    check_labels(["a", "b"], ["x", "y"], "runs")
    with pytest.raises(UserError, match="1 --labels for 2 runs"):
        check_labels(["a"], ["x", "y"], "runs")
    with pytest.raises(UserError, match="must differ"):
        check_labels(["a", "a"], ["x", "y"], "runs")


def test_runs_are_averaged_where_they_overlap() -> None:
    """y = x from 0 to 10 and y = x + 2 from 1 to 9 (two points each): on the common span
    1..9 the mean is x + 1 and the sample sd of two values 2 apart is sqrt(2)."""
    curves = [
        (np.array([0.0, 10.0]), np.array([0.0, 10.0])),
        (np.array([1.0, 9.0]), np.array([3.0, 11.0])),
    ]
    grid, mean, sd = mean_and_sd(curves, points=5)

    np.testing.assert_allclose(grid, [1.0, 3.0, 5.0, 7.0, 9.0])
    np.testing.assert_allclose(mean, grid + 1.0)
    np.testing.assert_allclose(sd, np.full(5, np.sqrt(2.0)))
    _, alone, no_sd = mean_and_sd(curves[:1], points=3)
    np.testing.assert_allclose(alone, [0.0, 5.0, 10.0])
    assert not no_sd.any()
    with pytest.raises(ValueError, match="share no x"):
        mean_and_sd([(np.array([0.0, 1.0]), np.zeros(2)), (np.array([2.0, 3.0]), np.zeros(2))])


def test_score_over_time_plot(tmp_path: Path) -> None:
    minutes = np.array([2.5, 5.0, 7.5, 10.0])
    sides = {"ours": [(minutes, minutes * 3), (minutes + 0.2, minutes * 3 + 1)]}
    sides["peer"] = [(minutes, minutes * 2)]
    save_score_over_time_plot(sides, tmp_path / "bleu.png", "validation BLEU", "minutes")
    assert (tmp_path / "bleu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["bleu.png"]
