"""Reading the user's text files leniently and writing outputs atomically."""

import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from seq2seq.errors import UserError

log = logging.getLogger(__name__)


def read_text_lines(path: str) -> list[str]:
    """All lines of a file (or stdin for "-"), without newlines.

    Invalid UTF-8 is decoded with U+FFFD replacement and warned about with
    the line numbers; no line is ever dropped, so outputs stay aligned.
    """
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror}") from err
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines, invalid = [], []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            lines.append(raw.decode("utf-8", errors="replace").rstrip("\r"))
            invalid.append(number)
    if invalid:
        log.warning(
            "%s: invalid UTF-8 on line(s) %s, decoded with replacement characters",
            path,
            line_numbers(invalid),
        )
    return lines


@contextmanager
def atomic_output(path: str) -> Iterator[TextIO]:
    """Write UTF-8 to stdout for "-" (whatever the locale), else to a temporary file renamed
    over `path` on success only."""
    if path == "-":
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(encoding="utf-8")
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    if not target.parent.is_dir():
        raise UserError(f"cannot write {path}: directory {target.parent} does not exist")
    if target.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from err
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.replace(tmp_name, target)
        except OSError as err:
            raise UserError(f"cannot write {path}: {err.strerror}") from err
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def line_numbers(numbers: list[int], limit: int = 10) -> str:
    """The first `limit` line numbers, then how many more."""
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")
