"""Cache folders that several processes build and read: keyed by what they depend on,
published whole (a folder renamed into place with a marker file inside, so a half-written
one is never read and two processes may build at once), or waited for while global rank 0
builds them."""

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed
from lightning.pytorch.utilities import rank_zero_only

from seq2seq.errors import UserError

log = logging.getLogger(__name__)

MARKER = "complete"


def cache_key(*parts: object) -> str:
    """A short hash of JSON-serializable parts."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def is_complete(path: Path) -> bool:
    """Whether the folder `path` was published whole (it holds the marker)."""
    return (path / MARKER).is_file()


def global_rank() -> int:
    """This process's global rank: from the process group, else as Lightning reads it from
    the launcher's environment (RANK, SLURM_PROCID, ...) before the group exists."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return rank_zero_only.rank


def wait_for_file(path: Path, what: str, timeout: float) -> None:
    """Wait for another process (global rank 0) to write `path`."""
    if path.exists():
        return
    log.info("rank %d: waiting for rank 0's %s at %s", global_rank(), what, path.parent)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise UserError(
                f"rank 0 did not write its {what} at {path.parent} within {timeout:.0f} s: do "
                "all processes see the same files (corpus, --data.cache_dir)?"
            )
        time.sleep(0.5)


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block succeeds, rename it to `final`.

    If another process published a complete `final` meanwhile, that one wins.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        (tmp / MARKER).touch()
        if final.exists() and not is_complete(final):
            shutil.rmtree(final)  # left over from an interrupted copy
        try:
            tmp.rename(final)
        except OSError:
            if not is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
