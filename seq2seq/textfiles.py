"""Reading the user's text files leniently and writing outputs atomically."""

import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import IO, BinaryIO, TextIO

from seq2seq.errors import UserError

log = logging.getLogger(__name__)


def read_text_lines(path: str) -> list[str]:
    """All lines of a file (or stdin for "-"): `open_text_lines` read to the end."""
    return list(open_text_lines(path))


def open_text_lines(path: str) -> Iterator[str]:
    """The lines of a file (or stdin for "-"), without newlines, read as they are taken.

    The file is opened now (UserError if it cannot be). Invalid UTF-8 is decoded with
    U+FFFD replacement and warned about with the line numbers once all lines are read;
    no line is ever dropped, so outputs stay aligned.
    """
    if path == "-":
        return _decoded_lines(nullcontext(sys.stdin.buffer), path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 (closed by the generator)
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from err
    return _decoded_lines(stream, path)


def count_lines(path: str) -> int:
    """The number of lines `open_text_lines` reads from a file (UserError if it cannot be read)."""
    try:
        with open(path, "rb") as stream:
            return sum(1 for _ in stream)
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from err


def _decoded_lines(opened: AbstractContextManager[BinaryIO], path: str) -> Iterator[str]:
    invalid = []
    with opened as stream:
        for number, raw in enumerate(stream, start=1):
            raw = raw.removesuffix(b"\n")
            try:
                yield raw.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError:
                invalid.append(number)
                yield raw.decode("utf-8", errors="replace").rstrip("\r")
    if invalid:
        log.warning(
            "%s: invalid UTF-8 on line(s) %s, decoded with replacement characters",
            path,
            line_numbers(invalid),
        )


def utf8_stdout() -> TextIO:
    """sys.stdout, writing UTF-8 whatever the locale (where it can be reconfigured)."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8")
    return sys.stdout


@contextmanager
def atomic_output(path: str) -> Iterator[TextIO]:
    """Write UTF-8 to stdout for "-" (whatever the locale), else to a temporary file renamed
    over `path` on success only."""
    if path == "-":
        yield utf8_stdout()
        sys.stdout.flush()
        return
    with _replaced_on_success(path, binary=False) as handle:
        yield handle


@contextmanager
def atomic_binary_output(path: str) -> Iterator[BinaryIO]:
    """`atomic_output` for bytes (e.g. `torch.save`); to a file only."""
    with _replaced_on_success(path, binary=True) as handle:
        yield handle


@contextmanager
def _replaced_on_success(path: str, binary: bool) -> Iterator[IO]:
    """A temporary file beside `path`, renamed over it if the block succeeds, else removed."""
    target = Path(path)
    if not target.parent.is_dir():
        raise UserError(f"cannot write {path}: directory {target.parent} does not exist")
    if target.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from err
    text = {} if binary else {"encoding": "utf-8", "newline": "\n"}
    try:
        with os.fdopen(fd, "wb" if binary else "w", **text) as handle:
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
