"""`plot_metrics.py`: reading runs' CSV logs and drawing them; bad input is one `error:` line."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seq2seq.cli.plot_metrics import main, read_run

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot_metrics.py"
PNG = b"\x89PNG\r\n\x1a\n"


def write_log(path: Path, text: str, mtime: int) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(text)
    os.utime(path, ns=(mtime, mtime))


def test_plots_the_trained_run(trained: Path, tmp_path: Path) -> None:
    """Through the script, as people run it; the run's logs hold what the plot needs."""
    out = tmp_path / "curves.png"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(trained), "--output", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}: 1 run(s)"
    assert out.read_bytes()[:8] == PNG
    metrics = read_run(trained)
    assert {"train_loss", "val_loss", "val_bleu", "grad_norm"} <= set(metrics)
    steps, values = metrics["train_loss"]
    assert len(steps) == len(values) > 1 and (np.diff(steps) > 0).all()


def test_later_logs_replace_the_steps_they_repeat(tmp_path: Path) -> None:
    """A run resumed from step 2 logs steps 2 and 3 again, in a newer version folder."""
    header = "epoch,grad_norm,lr-Adam,step,train_loss,val_bleu\n"
    first = header + "0,1.5,0.001,0,9.0,\n0,1.2,0.001,1,8.0,\n0,,,1,,3.5\n0,1.1,0.001,2,7.0,\n"
    first += "0,1.0,0.001,3,6.5,\n"
    write_log(tmp_path / "lightning_logs" / "version_0" / "metrics.csv", first, 10**18)
    second = header + "0,0.9,0.0005,2,6.0,\n0,0.8,0.0005,3,5.0,\n"
    write_log(tmp_path / "lightning_logs" / "version_1" / "metrics.csv", second, 2 * 10**18)
    metrics = read_run(tmp_path)
    assert set(metrics) == {"grad_norm", "lr", "train_loss", "val_bleu"}
    steps, values = metrics["train_loss"]
    assert steps.tolist() == [0, 1, 2, 3] and values.tolist() == [9.0, 8.0, 6.0, 5.0]
    assert metrics["lr"][1].tolist() == [0.001, 0.001, 0.0005, 0.0005]
    assert [m.tolist() for m in metrics["val_bleu"]] == [[1], [3.5]]


def test_runs_side_by_side(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "two.png"
    main([str(trained), str(trained), "--labels", "clip", "no clip", "--output", str(out)])
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{tmp}/nowhere", "--output", "{tmp}/x.png"], "run folder not found: {tmp}/nowhere"),
        (["{tmp}/empty", "--output", "{tmp}/x.png"], "{tmp}/empty holds no metrics.csv"),
        (["{tmp}/bad", "--output", "{tmp}/x.png"], "{tmp}/bad/metrics.csv:2: train_loss is 'x'"),
        (["{tmp}/bad", "--output", "{tmp}/no/x.png"], "directory {tmp}/no does not exist"),
        (["{tmp}/bad", "--labels", "a", "b", "--output", "{tmp}/x.png"], "2 --labels for 1 run"),
        (["{tmp}/bad", "{tmp}/bad", "--output", "{tmp}/x.png"], "labels must differ"),
    ],
)
def test_bad_input_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    write_log(tmp_path / "bad" / "metrics.csv", "step,train_loss\n0,x\n", 10**18)
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(tmp=tmp_path) for arg in argv])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("error: ")
    assert message.format(tmp=tmp_path) in stderr[0]
    assert not (tmp_path / "x.png").exists()
