"""Bad input, end to end: each script exits 2 with one `error:` line naming the file or setting.

Every row of `CASES` runs a real script in a subprocess, in a fresh `tmp_path`,
and checks: exit status 2, no traceback, a last stderr line `error: ...` that
holds the expected words (`{tmp}` stands for `tmp_path`), and nothing left
behind: no output file, no temporary file (only the data cache may appear).
"""

import datetime
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TRAIN = str(SCRIPTS / "train.py")
TRANSLATE = str(SCRIPTS / "translate.py")
EVALUATE = str(SCRIPTS / "evaluate.py")
SHORTLIST = str(SCRIPTS / "shortlist.py")
IS_ROOT = os.geteuid() == 0


class Env:
    """Builds one case's command line in `tmp`, writing the files it needs there."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.tmp = tmp
        self.out = tmp / "out.en"  # translate.py's --output
        self._request = request

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def pair(self, prefix: str, de: str | bytes, en: str | bytes) -> Path:
        """Parallel files `prefix.de` and `prefix.en`; returns the prefix."""
        self.write(f"{prefix}.de", de)
        self.write(f"{prefix}.en", en)
        return self.tmp / prefix

    def train(self, *extra: object) -> list[object]:
        """train.py on the tiny corpus, writing under `tmp`; later flags in `extra` win."""
        train_args = self._request.getfixturevalue("train_args")
        return [TRAIN, *train_args(self.tmp), *extra]

    @property
    def checkpoint(self) -> Path:
        """The tiny trained run's checkpoint (trains once per session, on first use)."""
        return self._request.getfixturevalue("trained") / "checkpoints" / "best.ckpt"

    def edited_checkpoint(self, name: str, edit: Callable[[dict], object]) -> Path:
        """The real checkpoint, loaded, changed in place by `edit`, saved as `name`."""
        checkpoint = torch.load(self.checkpoint, weights_only=True)
        edit(checkpoint)
        torch.save(checkpoint, self.tmp / name)
        return self.tmp / name

    def torch_file(self, name: str, content: object) -> Path:
        torch.save(content, self.tmp / name)
        return self.tmp / name

    def source(self) -> Path:
        return self.write("in.de", "einundzwanzig\ndreihundert\n")

    def translate(self, *extra: object) -> list[object]:
        """translate.py from a two-line file into `out.en`; later flags in `extra` win."""
        files = ["--input", self.source(), "--output", self.out]
        return [TRANSLATE, "--checkpoint", self.checkpoint, *files, *extra]

    def evaluate(self, *args: object) -> list[object]:
        return [EVALUATE, *args]


def case(
    name: str, argv: Callable[[Env], list[object]], *expected: str, marks: object = ()
) -> object:
    """One row: a name, the command line built in a fresh folder, words the message holds."""
    return pytest.param(argv, expected, id=name, marks=marks)


def _drop_tokenizer(checkpoint: dict) -> None:
    del checkpoint["tokenizer"]


def _drop_target_model(checkpoint: dict) -> None:
    del checkpoint["tokenizer"]["tgt"]


def _garble_models(checkpoint: dict) -> None:
    checkpoint["tokenizer"] = {"src": b"garbage", "tgt": b"garbage"}


def _first_half(env: Env, name: str) -> Path:
    data = env.checkpoint.read_bytes()
    return env.write(name, data[: len(data) // 2])


def _unwritable_output(env: Env) -> list[object]:
    locked = env.tmp / "locked"
    locked.mkdir(mode=0o500)
    return env.translate("--output", locked / "out.en")


NUMBERS_DE = "eins\nzwei\ndrei\n"

CASES = [
    # train.py: files
    case(
        "train-missing-train-file",
        lambda e: e.train("--data.train", e.tmp / "nowhere"),
        "corpus file not found: {tmp}/nowhere.de",
    ),
    case(
        "train-missing-val-file",
        lambda e: e.train("--data.val", e.tmp / "noval"),
        "corpus file not found: {tmp}/noval.de",
    ),
    case(
        "train-missing-test-file",
        lambda e: e.train("--data.test", e.tmp / "notest"),
        "corpus file not found: {tmp}/notest.de",
    ),
    case(
        "train-line-counts-differ",
        lambda e: e.train("--data.train", e.pair("bad", NUMBERS_DE, "one\ntwo\n")),
        "{tmp}/bad.de has 3 lines",
        "{tmp}/bad.en has 2 lines",
    ),
    case(
        "train-empty-after-cleaning",
        lambda e: e.train("--data.train", e.pair("blank", "eins\n \n\n", "\nzwei\n\t\n")),
        "{tmp}/blank.de + {tmp}/blank.en is empty after dropping pairs with a blank side",
    ),
    case(
        "train-binary-file",
        lambda e: e.train("--data.train", e.pair("bin", "eins\n", b"\x00\xff\xfe\x00\x01\n")),
        "{tmp}/bin.en:1: invalid UTF-8",
    ),
    case(
        "train-latin1-file",
        lambda e: e.train(
            "--data.train", e.pair("latin", NUMBERS_DE, "one\ntwo\ncaf\xe9\n".encode("latin-1"))
        ),
        "{tmp}/latin.en:3: invalid UTF-8",
    ),
    # train.py: settings
    case(
        "train-unknown-key",
        lambda e: e.train("--model.hiden_size", "8"),
        "unrecognized arguments: --model.hiden_size 8",
    ),
    case(
        "train-wrong-type",
        lambda e: e.train("--model.hidden_size", "abc"),
        '"model.hidden_size"',
        "abc",
    ),
    case(
        "train-top-k-under-one-name",
        lambda e: e.train("--checkpoint.filename", "best", "--checkpoint.save_top_k", "3"),
        "--checkpoint.filename best names them alike: put {{step}} in it",
    ),
    case(
        "train-negative-hidden-size",
        lambda e: e.train("--model.hidden_size", "-4"),
        "model.hidden_size must be at least 1, got -4",
    ),
    case(
        "train-dropout-out-of-range",
        lambda e: e.train("--model.dropout", "1.5"),
        "model.dropout must be in [0, 1), got 1.5",
    ),
    case(
        "train-max-tokens-below-max-len",
        lambda e: e.train("--data.max_len", "50", "--data.max_tokens", "20"),
        "data.max_tokens (20) must be at least data.max_len + 1",
    ),
    case(
        "train-same-languages",
        lambda e: e.train("--data.tgt_lang", "de"),
        "data.src_lang and tgt_lang must differ",
    ),
    case(
        "train-missing-config-file",
        lambda e: e.train("--config", e.tmp / "absent.yaml"),
        "{tmp}/absent.yaml",
        "does not exist",
    ),
    case(
        "train-invalid-yaml",
        lambda e: e.train("--config", e.write("bad.yaml", "model:\n  hidden_size: [8\n  x: {\n")),
        "{tmp}/bad.yaml:3: invalid YAML",
    ),
    case(
        "train-unknown-key-in-yaml",
        lambda e: e.train("--config", e.write("typo.yaml", "model:\n  hiden_size: 8\n")),
        "'model' does not accept option 'hiden_size'",
    ),
    # translate.py: checkpoints
    case(
        "translate-no-checkpoint-flag",
        lambda e: [TRANSLATE, "--input", e.source(), "--output", e.out],
        "the following arguments are required: --checkpoint",
    ),
    case(
        "translate-checkpoint-not-found",
        lambda e: e.translate("--checkpoint", e.tmp / "none.ckpt"),
        "checkpoint not found: {tmp}/none.ckpt",
    ),
    case(
        "translate-truncated-checkpoint",
        lambda e: e.translate("--checkpoint", _first_half(e, "half.ckpt")),
        "{tmp}/half.ckpt: not a PyTorch checkpoint",
    ),
    case(
        "translate-text-as-checkpoint",
        lambda e: e.translate("--checkpoint", e.write("text.ckpt", "not a checkpoint\n")),
        "{tmp}/text.ckpt: not a PyTorch checkpoint",
    ),
    case(
        "translate-foreign-torch-file",
        lambda e: e.translate("--checkpoint", e.torch_file("other.ckpt", {"a": 1})),
        "{tmp}/other.ckpt: not a seq2seq training checkpoint",
    ),
    case(
        "translate-tensor-file",
        lambda e: e.translate("--checkpoint", e.torch_file("tensor.ckpt", torch.zeros(3))),
        "{tmp}/tensor.ckpt: not a seq2seq training checkpoint (it holds a Tensor)",
    ),
    case(
        "translate-pickled-object",
        lambda e: e.translate(
            "--checkpoint", e.torch_file("obj.ckpt", {"when": datetime.date(2024, 1, 1)})
        ),
        "{tmp}/obj.ckpt: refused to load",
        "datetime.date",
    ),
    case(
        "translate-checkpoint-without-tokenizer",
        lambda e: e.translate("--checkpoint", e.edited_checkpoint("notok.ckpt", _drop_tokenizer)),
        "{tmp}/notok.ckpt: not a seq2seq training checkpoint (no tokenizer)",
    ),
    case(
        "translate-checkpoint-without-target-model",
        lambda e: e.translate(
            "--checkpoint", e.edited_checkpoint("notgt.ckpt", _drop_target_model)
        ),
        "{tmp}/notgt.ckpt: its SentencePiece models",
        "missing",
    ),
    case(
        "translate-checkpoint-garbled-models",
        lambda e: e.translate("--checkpoint", e.edited_checkpoint("garbled.ckpt", _garble_models)),
        "{tmp}/garbled.ckpt: source SentencePiece model: not a valid SentencePiece model",
    ),
    # translate.py: options and paths
    case(
        "translate-beam-size-0",
        lambda e: e.translate("--beam-size", "0"),
        "--beam-size must be at least 1, got 0",
    ),
    case(
        "translate-nbest-above-beam",
        lambda e: e.translate("--nbest", "3", "--beam-size", "2"),
        "--nbest must be between 1 and the beam size (2), got 3",
    ),
    case(
        "translate-beam-size-not-a-number",
        lambda e: e.translate("--beam-size", "abc"),
        "argument --beam-size: invalid int value: 'abc'",
    ),
    case(
        "translate-unknown-device",
        lambda e: e.translate("--device", "gpu"),
        "--device must be cpu, cuda, cuda:N or auto, got 'gpu'",
    ),
    case(
        "translate-missing-input",
        lambda e: e.translate("--input", e.tmp / "nowhere.de"),
        "cannot read {tmp}/nowhere.de: No such file or directory",
    ),
    case(
        "translate-output-directory-missing",
        lambda e: e.translate("--output", e.tmp / "no" / "out.en"),
        "cannot write {tmp}/no/out.en: directory {tmp}/no does not exist",
    ),
    case(
        "translate-output-is-a-directory",
        lambda e: e.translate("--output", e.tmp),
        "cannot write {tmp}: it is a directory",
    ),
    case(
        "translate-output-unwritable",
        _unwritable_output,
        "cannot write {tmp}/locked/out.en: Permission denied",
        marks=pytest.mark.skipif(IS_ROOT, reason="root ignores file permissions"),
    ),
    case(
        "translate-shortlist-not-found",
        lambda e: e.translate("--shortlist", e.tmp / "lex.pt"),
        "shortlist not found: {tmp}/lex.pt",
    ),
    case(
        "translate-shortlist-not-a-shortlist",
        lambda e: e.translate("--shortlist", e.checkpoint),
        "not a shortlist file (write one with scripts/shortlist.py)",
    ),
    case(
        "shortlist-line-counts-differ",
        lambda e: [
            *(SHORTLIST, "--checkpoint", e.checkpoint, "--output", e.tmp / "lex.pt"),
            *("--src", e.write("s.de", "a\nb\n"), "--tgt", e.write("s.en", "a\n")),
        ],
        "parallel files differ in length: {tmp}/s.de has 2 lines, {tmp}/s.en has 1 lines",
    ),
    case(
        "translate-coverage-penalty-without-beta",
        lambda e: e.translate("--coverage-penalty", "wu"),
        "--coverage-penalty wu needs --beta above 0",
    ),
    case(
        "translate-coverage-penalty-with-sampling",
        lambda e: e.translate("--coverage-penalty", "wu", "--beta", "0.2", "--sampling"),
        "the coverage penalty ranks search outputs; sampling ranks none",
    ),
    case(
        "translate-attention-plot-directory-missing",
        lambda e: e.translate("--attention-plot", e.tmp / "plots"),
        "--attention-plot: directory {tmp}/plots does not exist",
    ),
    # evaluate.py
    case(
        "evaluate-missing-ref",
        lambda e: e.evaluate("--hyp", e.write("hyp", "a\n"), "--ref", e.tmp / "nope"),
        "cannot read {tmp}/nope: No such file or directory",
    ),
    case(
        "evaluate-missing-hyp",
        lambda e: e.evaluate("--hyp", e.tmp / "nope", "--ref", e.write("ref", "a\n")),
        "cannot read {tmp}/nope: No such file or directory",
    ),
    case(
        "evaluate-line-counts-differ",
        lambda e: e.evaluate("--hyp", e.write("hyp", "a\nb\n"), "--ref", e.write("ref", "a\n")),
        "line counts differ: {tmp}/hyp has 2 lines, {tmp}/ref has 1",
    ),
    case(
        "evaluate-checkpoint-without-src",
        lambda e: e.evaluate("--checkpoint", e.tmp / "x.ckpt", "--ref", e.write("ref", "a\n")),
        "--checkpoint needs --src",
    ),
    case(
        "evaluate-unknown-tokenizer",
        lambda e: e.evaluate(
            "--hyp", e.write("hyp", "a\n"), "--ref", e.write("ref", "a\n"), "--tokenize", "13b"
        ),
        "argument --tokenize: invalid choice: '13b'",
    ),
]


def files_under(folder: Path) -> set[Path]:
    """Everything under `folder` but the data cache, which a failed run may keep."""
    return {p for p in folder.rglob("*") if "cache" not in p.relative_to(folder).parts}


@pytest.mark.parametrize(("argv", "expected"), CASES)
def test_bad_input_exits_2_with_one_line(
    argv: Callable[[Env], list[object]],
    expected: tuple[str, ...],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    command = [sys.executable, *map(str, argv(Env(tmp_path, request)))]
    before = files_under(tmp_path)
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False
    )
    stderr = result.stderr
    assert result.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    print(f"\n{request.node.callspec.id}: {last}")
    assert last.startswith("error: "), stderr[-3000:]
    assert sum(line.startswith("error:") for line in stderr.splitlines()) == 1, stderr[-3000:]
    for text in expected:
        assert text.format(tmp=tmp_path) in last
    assert files_under(tmp_path) == before, "a failed run left files behind"
