"""scripts/get_data.py: fetching a registered corpus from a mirror folder or URL, checked."""

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from seq2seq.cli.get_data import main
from seq2seq.corpus import resolve_corpus_file
from seq2seq.download import CORPORA, Corpus, fetch_hint, file_sha256
from seq2seq.errors import UserError

MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"
TINY = {"train.de.gz": b"Hallo Welt\n", "train.en.gz": b"hello world\n", "val.de.gz": b"ja\n"}


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of tiny files, registered (with their checksums) as the corpus "tiny"."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name, content in TINY.items():
        (folder / name).write_bytes(content)
    files = {name: hashlib.sha256(content).hexdigest() for name, content in TINY.items()}
    monkeypatch.setitem(CORPORA, "tiny", Corpus("https://example.invalid/tiny/", files))
    return folder


@pytest.fixture
def http_mirror(mirror: Path) -> Iterator[str]:
    """The mirror folder served over HTTP on 127.0.0.1 by a thread, quietly."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=mirror))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def failing_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a run that must exit with status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_mirror_folder_gives_identical_files_then_up_to_date(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "data"
    main(["tiny", "--dest", str(dest), "--mirror", str(mirror)])
    for name, content in TINY.items():
        assert (dest / "tiny" / name).read_bytes() == content
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"tiny: 3 files in {dest / 'tiny'} (configs read {dest / 'tiny/train'}, val)"
    mtimes = {path: path.stat().st_mtime_ns for path in (dest / "tiny").iterdir()}

    main(["tiny", "--dest", str(dest), "--mirror", mirror.as_uri()])
    assert {path: path.stat().st_mtime_ns for path in (dest / "tiny").iterdir()} == mtimes
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [f"{dest / 'tiny' / name}: up to date" for name in TINY]


def test_present_file_with_wrong_checksum_is_fetched_again(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "val.de.gz").write_bytes(b"stale\n")
    main(["tiny", "--dest", str(tmp_path), "--mirror", str(mirror)])
    assert (tmp_path / "tiny" / "val.de.gz").read_bytes() == TINY["val.de.gz"]
    assert f"{tmp_path / 'tiny' / 'val.de.gz'}: fetched" in capsys.readouterr().out


def test_corrupted_mirror_file_exits_2_and_leaves_nothing(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mirror / "train.en.gz").write_bytes(b"tampered\n")
    dest = tmp_path / "data"
    line = failing_run(["tiny", "--dest", str(dest), "--mirror", str(mirror)], capsys)
    expected = hashlib.sha256(TINY["train.en.gz"]).hexdigest()
    got = hashlib.sha256(b"tampered\n").hexdigest()
    assert line.startswith("error: ") and "train.en.gz" in line
    assert f"expected {expected}, got {got}" in line
    assert [path.name for path in (dest / "tiny").iterdir()] == ["train.de.gz"]  # no temp file


def test_missing_mirror_file_exits_2(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mirror / "val.de.gz").unlink()
    line = failing_run(["tiny", "--dest", str(tmp_path), "--mirror", str(mirror)], capsys)
    assert line == f"error: {(mirror / 'val.de.gz').as_uri()}: No such file or directory"
    assert not (tmp_path / "tiny" / "val.de.gz").exists()


def test_http_mirror(http_mirror: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["tiny", "--dest", str(tmp_path), "--mirror", http_mirror])
    for name, content in TINY.items():
        assert (tmp_path / "tiny" / name).read_bytes() == content
    assert capsys.readouterr().out.count(": fetched") == len(TINY)


def test_http_mirror_missing_file_is_http_404(
    http_mirror: str, mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mirror / "train.de.gz").unlink()
    line = failing_run(["tiny", "--dest", str(tmp_path), "--mirror", http_mirror], capsys)
    assert line == f"error: {http_mirror}train.de.gz: HTTP 404 File not found"


def test_closed_port_exits_2(
    mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    line = failing_run(["tiny", "--dest", str(tmp_path), "--mirror", url], capsys)
    assert line.startswith(f"error: {url}train.de.gz: ")
    assert list((tmp_path / "tiny").iterdir()) == []


def test_unknown_corpus_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nosuchcorpus"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nosuchcorpus'" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_registry_from_shared_multi30k(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not MULTI30K.is_dir():
        pytest.skip(f"{MULTI30K} is absent")
    main(["multi30k", "--dest", str(tmp_path), "--mirror", str(MULTI30K)])
    files = CORPORA["multi30k"].files
    assert len(files) == 9
    for name, sha256 in files.items():
        assert file_sha256(tmp_path / "multi30k" / name) == sha256
    folder = tmp_path / "multi30k"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"multi30k: 9 files in {folder} (configs read {folder / 'train'}, val, test_2016_flickr)"
    )


def test_missing_corpus_file_hints_at_the_fetch_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as error:
        resolve_corpus_file("data/multi30k/train", "de")
    assert str(error.value).endswith("; fetch it with: python scripts/get_data.py multi30k")
    with pytest.raises(UserError) as error:
        resolve_corpus_file(tmp_path / "multi30k" / "train", "de")
    assert str(error.value).endswith(f"get_data.py multi30k --dest {tmp_path}")
    assert fetch_hint("data/other/train.de") == ""
