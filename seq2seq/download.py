"""Public corpora and fetching them: a registry of file names and SHA-256 digests.

Each file is streamed from the corpus's base URL (or a mirror: a local folder or
another base URL) into a temporary file beside its destination, and renamed into
place only when its SHA-256 matches. A file already present with the right digest
is left alone. Adding a corpus is one `CORPORA` entry.
"""

import hashlib
import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from tqdm import tqdm

from seq2seq.errors import UserError
from seq2seq.textfiles import atomic_binary_output

BLOCK_SIZE = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class Corpus:
    """Files `PREFIX.lang.gz` under `base_url`, each with its SHA-256 (hex)."""

    base_url: str
    files: dict[str, str]

    @property
    def prefixes(self) -> list[str]:
        """The distinct `PREFIX`es, in registry order (what configs name)."""
        return list(dict.fromkeys(name.rsplit(".", 2)[0] for name in self.files))


CORPORA = {
    "multi30k": Corpus(
        base_url="https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/",
        files={
            "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
            "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
            "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
            "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
            "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
            "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
            "test_2016_flickr.de.gz": (
                "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"
            ),
            "test_2016_flickr.en.gz": (
                "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"
            ),
            "test_2016_flickr.fr.gz": (
                "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90"
            ),
        },
    ),
}


def fetch_corpus(name: str, folder: Path, mirror: str | None = None) -> Iterator[tuple[Path, bool]]:
    """Fetch each file of corpus `name` into `folder` (created if needed), from `mirror`
    (a folder, file://, http:// or https:// URL) or else the corpus's base URL.

    Yields each file's path and whether it was fetched (False: it was up to date).
    A failed read or a wrong checksum raises UserError and leaves no partial file.
    """
    corpus = CORPORA[name]
    base = corpus.base_url if mirror is None else mirror_url(mirror)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {folder}: {err.strerror}") from None
    for file_name, sha256 in corpus.files.items():
        target = folder / file_name
        if target.is_file() and file_sha256(target) == sha256:
            yield target, False
            continue
        fetch_file(base + file_name, target, sha256)
        yield target, True


def mirror_url(mirror: str) -> str:
    """The base URL (ending in "/") of a mirror given as a URL or a local folder."""
    if urlsplit(mirror).scheme in ("http", "https", "file"):
        return mirror.rstrip("/") + "/"
    return Path(mirror).resolve().as_uri() + "/"


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(BLOCK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(url: str, target: Path, sha256: str) -> None:
    """Stream `url` into `target`, which appears only if the bytes have SHA-256 `sha256`."""
    try:
        with (
            urllib.request.urlopen(url, timeout=TIMEOUT_S) as response,
            atomic_binary_output(str(target)) as out,
        ):
            size = response.headers.get("Content-Length")
            got = _copy(response, out, target.name, int(size) if size else None)
            if got != sha256:  # before the file is renamed into place
                raise UserError(f"{url}: SHA-256 mismatch (expected {sha256}, got {got})")
    except (OSError, http.client.HTTPException) as err:
        raise UserError(f"{url}: {_reason(err)}") from None


def _copy(response: BinaryIO, out: BinaryIO, name: str, size: int | None) -> str:
    """Copy a response of `size` bytes (None: unknown) to `out`; return their SHA-256."""
    digest = hashlib.sha256()
    bar = tqdm(
        desc=name,
        total=size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=None,  # None: no bar where stderr is not a terminal
    )
    with bar:
        while block := response.read(BLOCK_SIZE):
            digest.update(block)
            out.write(block)
            bar.update(len(block))
    return digest.hexdigest()


def _reason(err: Exception) -> str:
    """Why a read failed, in a few words."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def fetch_hint(path: str | Path) -> str:
    """The hint "; fetch it with: ..." for a file in a folder named after a corpus, else ""."""
    folder = Path(path).parent
    if folder.name not in CORPORA:
        return ""
    dest = "" if folder.parent == Path("data") else f" --dest {folder.parent}"
    return f"; fetch it with: python scripts/get_data.py {folder.name}{dest}"
