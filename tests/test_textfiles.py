"""Lenient input reading and atomic output."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seq2seq.errors import UserError
from seq2seq.textfiles import atomic_output, read_text_lines


def test_every_line_kept_and_bad_utf8_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"eins\n\n  \nzw\xe4i\r\ndrei")
    with caplog.at_level(logging.WARNING):
        lines = read_text_lines(str(path))
    assert lines == ["eins", "", "  ", "zw\ufffdi", "drei"]
    assert "line(s) 4" in caplog.text and str(path) in caplog.text


def test_missing_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.txt"):
        read_text_lines(str(tmp_path / "missing.txt"))


def test_output_appears_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt), atomic_output(str(target)) as out:
        out.write("partial\n")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_output(str(target)) as out:
        out.write("done\n")
    assert target.read_text() == "done\n"
    assert list(tmp_path.iterdir()) == [target]


def test_output_directory_must_exist(tmp_path: Path) -> None:
    with (
        pytest.raises(UserError, match="does not exist"),
        atomic_output(str(tmp_path / "no" / "x")),
    ):
        pass


@pytest.mark.parametrize("locale_env", [{"LC_ALL": "C"}, {"PYTHONIOENCODING": "ascii"}])
def test_stdout_is_utf8_whatever_the_locale(locale_env: dict[str, str]) -> None:
    """`translate.py` to stdout in the C locale or on an ASCII terminal still writes UTF-8."""
    code = "from seq2seq.textfiles import atomic_output\n"
    code += "with atomic_output('-') as out:\n    out.write('Gr\\u00fc\\u00dfe\\n')\n"
    env = {**os.environ, "PYTHONUTF8": "0", **locale_env}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert done.stdout == "Grüße\n".encode()
