"""Every command in the code blocks of README.md and docs/*.md runs as written, or parses.

The ```bash and ```python blocks are read at test time (backslash continuations joined,
`# comments` dropped, `for VAR in ...; do ... done` loops unrolled) and executed in
document order, README.md first, then docs/*.md by name, in one temporary folder laid out
like a checkout: `scripts/`, `configs/` and `benchmarks/` link to the repository's, and
`data/`, `runs/` and `.cache/` are made there by the commands themselves (the docs' pages
build on what the README's commands made). One child process runs the whole document (the
imports are paid once), then each command is a test case named `FILE:LINE`.

Each command is one of (`planned()` decides):

- run: `python scripts/*.py` in the child, as its `__main__` (`runpy`: the same code
  and arguments, in a process that has run the commands before), exit status 0 expected;
  a pipe or redirection in bash; a Python block in its own process. Runs are kept to
  seconds by adding, after the command's own options (later options win):

  | command | gets |
  |---|---|
  | `scripts/train.py` that trains | `TRAIN_LIMITS`: 1 epoch of 2 batches of 200 tokens, |
  |   | 2 validation and 2 test batches, no sanity check, no progress bar, |
  |   | SentencePiece trained on 2,000 sentences |
  | ... with `--checkpoint.save_top_k K` | K batches, validated and checkpointed after each |
  |   | (early stopping's patience K): K checkpoints to keep |
  | `scripts/get_data.py multi30k` | `--mirror <repo>/../shared/data/multi30k` (offline) |
  | every command | `OMP_NUM_THREADS=1` (`CHILD_ENV`): on tiny batches on shared cores, |
  |   | a second thread only waits (a run took 14-36 s with 2, 3-4 s with 1) |

- parse-only: its arguments are parsed as the script would parse them, and each input path
  it names (`INPUT_OPTIONS`) must exist, be promised by an earlier parse-only command's
  output, or be a documented placeholder (`PLACEHOLDERS`). scripts/train.py parses through
  `--print_config`; the other scripts through their `build_parser().parse_args`; a
  benchmark through its `parse_args()` (or, without one, its `main()` stopped right after
  its parser returns). Parse-only are: the long commands of `PARSE_ONLY`, a command of a
  `LAUNCHERS` program, and a command naming a placeholder. Where
  ../shared/data/multi30k is absent, a command naming multi30k is parsed only (its
  test case then skips, saying so).
- skipped: commands of `SKIPPED_KINDS` (not ours, or not ours to run here).

A command of no kind fails `test_every_command_is_classified`: add it to one of them.
"""

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINKED = ("scripts", "configs", "benchmarks", "docs")  # the checkout's folders the commands read
MULTI30K_MIRROR = REPO.parent / "shared" / "data" / "multi30k"
DOCUMENT_TIMEOUT = 900  # seconds for the whole document; each command takes a few
SUBPROCESS_TIMEOUT = 300
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

RUN, PARSE, SKIP, UNCLASSIFIED = "run", "parse-only", "skipped", "unclassified"

TRAIN_LIMITS = (
    *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"),
    *("--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2"),
    *("--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false"),
    *("--data.max_tokens", "200", "--data.spm_input_sentence_size", "2000"),
)
NOT_TRAINING = {"--print_config", "--help", "-h"}  # train.py options that exit before training

SKIPPED_KINDS = {
    "make": "make's targets are run by CI itself (`make test` is this suite, `make demo` "
    "trains for minutes)",
    "pip": "installs packages: the test runs in the installed environment, offline",
    "curl": "talks to a running server: tests/test_server.py tests the API",
    "bash": "the benchmarks' .sh wrappers run for hours or need a GPU",
}
PARSE_ONLY = [  # (pattern searched in the command, why it is not run)
    (r"^python benchmarks/", "a benchmark: minutes to hours (the docs give its time)"),
    (r"^python docs/experiments/", "an experiment: hours (the docs give its time)"),
    (r"^python scripts/serve\.py", "a server: it runs until stopped (tests/test_server.py)"),
    (r"--trainer\.accelerator gpu", "needs a GPU"),
    (r"--trainer\.(devices [2-9]|num_nodes)", "needs several devices or nodes"),
]
LAUNCHERS = {  # programs that start our scripts in several processes: parse the script's part
    "torchrun": "torchrun starts one process per device",
    "srun": "srun is SLURM's: a cluster job step",
}
RUN_REASONS = {
    "scripts/train.py": "runs on tiny limits (TRAIN_LIMITS added)",
    "scripts/get_data.py": "runs from ../shared's mirror",
}
PIPE_HELPERS = {"echo", "printf", "cat", "head", "tail", "paste", "sort", "wc"}
PLACEHOLDERS = {  # paths the docs name for the reader's own files, made by no command
    *("A.ckpt", "B.ckpt", "a.ckpt", "b.ckpt", "c.ckpt", "CKPT"),
    *("hyp.en", "ref1.en", "ref2.en", "val.de", "val.en", "mono.en", "new/train", "new/val"),
    *("runs/rnn", "runs/gru", "runs/rnn/checkpoints/best.ckpt", "runs/gru/checkpoints/best.ckpt"),
    *("runs/rnn-clip", "runs/rnn-noclip", "runs/de-en/checkpoints"),
    "runs/en-de/checkpoints/best.ckpt",
}
INPUT_OPTIONS = {  # options whose values are files or folders that must exist
    *("--checkpoint", "--input", "--hyp", "--ref", "--src", "--tgt", "--inputs", "--run-dir"),
    *("--config", "--ckpt_path", "--init_from", "--data.train", "--data.val", "--data.test"),
    *("--data.spm_model", "--data.spm_tgt_model", "--source", "--configs", "--data-dir"),
    "--joeynmt-model-dir",
}
POSITIONAL_INPUTS = {"scripts/plot_metrics.py"}  # scripts whose leading positionals are inputs
OUTPUT_OPTIONS = {"--output", "--output-dir", "--work-dir", "--checkpoint.dirpath"}
RESUME_WORDS = {"last", "best"}  # --ckpt_path's names, not paths
OPERATORS = set("|<>;&()")


@dataclass(frozen=True)
class Command:
    """One command of a code block: `text` as a shell runs it, or a Python block's code."""

    doc: str
    line: int
    language: str  # "bash" or "python"
    text: str
    words: tuple[str, ...] = ()
    suffix: str = ""  # a loop's iteration, e.g. "[clip=1.0]"

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}{self.suffix}"


@dataclass
class Plan:
    """What the test does with a command: `mode` (RUN, PARSE, SKIP, UNCLASSIFIED) and why;
    for our scripts, the script and its arguments, and the shell text to run."""

    mode: str
    reason: str
    program: str = ""
    args: list[str] = field(default_factory=list)
    shell: str | None = None  # run in bash (a pipe or a redirection)
    absent: bool = False  # parsed only because ../shared/data/multi30k is absent


# Reading the documents


def code_blocks(path: Path) -> Iterator[tuple[str, int, list[str]]]:
    """(language, number of the block's first line, lines) of each fenced block."""
    language, start, lines = None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if language is None and line.lstrip().startswith("```"):
            language, start, lines = line.strip().strip("`").strip().lower(), number + 1, []
        elif language is not None and line.strip() == "```":
            yield language, start, lines
            language = None
        elif language is not None:
            lines.append(line)


def shell_words(text: str) -> list[str]:
    """The words of a shell line as bash splits them, operators apart, comments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def shell_text(words: list[str] | tuple[str, ...]) -> str:
    return " ".join(word if set(word) <= OPERATORS else shlex.quote(word) for word in words)


def logical_lines(lines: list[str], start: int) -> Iterator[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    pending, first = "", start
    for number, line in enumerate(lines, start):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            yield first, pending + line
            pending = ""
    if pending:
        yield first, pending


def bash_commands(doc: str, lines: list[str], start: int) -> Iterator[Command]:
    """The commands of a bash block; a `for VAR in A B; do ... done` loop gives its body's
    commands once per value, `$VAR` replaced."""
    loop: tuple[str, list[str]] | None = None
    body: list[tuple[int, list[str]]] = []
    for number, text in logical_lines(lines, start):
        words = shell_words(text)
        if not words:
            continue
        if words[0] == "for" and words[2:3] == ["in"] and words[-2:] == [";", "do"]:
            loop, body = (words[1], words[3:-2]), []
        elif loop is not None and words == ["done"]:
            name, values = loop
            for value in values:
                for line, body_words in body:
                    unrolled = [re.sub(rf"\$\{{?{name}\b}}?", value, w) for w in body_words]
                    text = shell_text(unrolled)
                    yield Command(doc, line, "bash", text, tuple(unrolled), f"[{name}={value}]")
            loop = None
        elif loop is not None:
            body.append((number, words))
        else:
            yield Command(doc, number, "bash", shell_text(words), tuple(words))


def document_commands() -> list[Command]:
    commands = []
    for path in DOCUMENTS:
        doc = path.relative_to(REPO).as_posix()
        for language, start, lines in code_blocks(path):
            if language in ("bash", "sh", "shell"):
                commands.extend(bash_commands(doc, lines, start))
            elif language in ("python", "py"):
                commands.append(Command(doc, start, "python", "\n".join(lines)))
    return commands


COMMANDS = document_commands()


# Classifying


def classify(command: Command) -> Plan:
    """Whether the test runs, parses or skips `command` (see the module's docstring)."""
    if command.language == "python":
        return Plan(RUN, "a Python block, run in its own process")
    segments = split_words(list(command.words), "|")
    redirected = any(word in ("<", ">", ">>") for word in command.words)
    for segment in segments:
        if segment and segment[0] in SKIPPED_KINDS:
            return Plan(SKIP, f"`{segment[0]}`: {SKIPPED_KINDS[segment[0]]}")
    ours = [s for s in segments if not s or s[0] not in PIPE_HELPERS]
    if len(ours) != 1 or not ours[0]:
        return Plan(UNCLASSIFIED, "not one command of ours (its pipe's others: PIPE_HELPERS)")
    words = strip_redirections(without_env(ours[0]))
    launcher = words[0] if words[0] in LAUNCHERS else None
    if launcher is not None:
        words = ["python", *next((words[i:] for i, w in enumerate(words) if w.endswith(".py")), [])]
    if len(words) < 2 or words[0] != "python" or not words[1].endswith(".py"):
        return Plan(UNCLASSIFIED, "not `python SCRIPT.py ...`, nor a skipped kind")
    program, args = words[1], words[2:]
    if not program.startswith(("scripts/", "benchmarks/", "docs/experiments/")):
        return Plan(UNCLASSIFIED, f"{program} is not in scripts/, benchmarks/ or docs/experiments/")
    plan = Plan(RUN, RUN_REASONS.get(program, "runs as written"), program, args)
    if len(segments) > 1 or redirected:
        plan.shell = pipe_text(segments, ours[0], program, args)
    named = shell_text(words)
    if launcher is not None:
        plan.mode, plan.reason = PARSE, LAUNCHERS[launcher]
    elif reason := next((r for p, r in PARSE_ONLY if re.search(p, named)), None):
        plan.mode, plan.reason = PARSE, reason
    elif placeholders := sorted(set(args) & PLACEHOLDERS):
        plan.mode, plan.reason = PARSE, f"names the placeholder(s) {', '.join(placeholders)}"
    return plan


def planned(command: Command) -> Plan:
    """classify(), and where ../shared/data/multi30k is absent, what needs it parsed only."""
    plan = classify(command)
    if plan.mode == RUN and "multi30k" in command.text and not MULTI30K_MIRROR.is_dir():
        plan.mode, plan.reason = PARSE, f"{MULTI30K_MIRROR} is absent: parsed, not run"
        plan.absent = True
    return plan


def split_words(words: list[str], operator: str) -> list[list[str]]:
    segments: list[list[str]] = [[]]
    for word in words:
        if word == operator:
            segments.append([])
        else:
            segments[-1].append(word)
    return segments


def without_env(words: list[str]) -> list[str]:
    """The words after leading `NAME=value` assignments."""
    start = 0
    while start < len(words) and re.fullmatch(r"[A-Za-z_]\w*=.*", words[start]):
        start += 1
    return words[start:]


def strip_redirections(words: list[str]) -> list[str]:
    kept, skip = [], False
    for word in words:
        if word in ("<", ">", ">>"):
            skip = True
        elif skip:
            skip = False
        else:
            kept.append(word)
    return kept


def pipe_text(segments: list[list[str]], ours: list[str], program: str, args: list[str]) -> str:
    """The pipe as bash runs it, our segment's arguments substituted."""
    extra = substituted(program, args)[len(args) :]
    rebuilt = [segment + extra if segment is ours else segment for segment in segments]
    return " | ".join(shell_text(segment) for segment in rebuilt)


def substituted(program: str, args: list[str]) -> list[str]:
    """The arguments a run gets (the table in the module's docstring)."""
    if program == "scripts/train.py" and not NOT_TRAINING & {a.split("=")[0] for a in args}:
        extra = list(TRAIN_LIMITS)
        top_k = option_values(args, {"--checkpoint.save_top_k"})
        if top_k and int(top_k[-1]) > 1:  # K batches, each validated and checkpointed
            extra += ["--trainer.limit_train_batches", top_k[-1]]
            extra += ["--trainer.val_check_interval", "1", "--early_stopping.patience", top_k[-1]]
            extra += ["--checkpoint.save_on_train_epoch_end", "false"]
        return [*args, *extra]
    if program == "scripts/get_data.py" and "multi30k" in args and "--mirror" not in args:
        return [*args, "--mirror", str(MULTI30K_MIRROR)]
    return args


def option_values(args: list[str], names: set[str]) -> list[str]:
    """The values given to the options `names` (`--name v1 v2`, `--name=v`)."""
    values, taking = [], False
    for arg in args:
        name, equals, value = arg.partition("=")
        if arg.startswith("-"):
            taking = name in names and not equals
            if name in names and equals:
                values.append(value)
        elif taking:
            values.append(arg)
    return values


# Running the document (in a child process: `python tests/test_readme_commands.py WORK OUT`)


def run_document(work: Path, results: Path) -> None:
    """Runs or parses each command in order in `work`; one JSON line per command."""
    os.chdir(work)
    logs = results.parent / "logs"
    logs.mkdir(exist_ok=True)
    promised: list[Path] = []
    with results.open("w", encoding="utf-8") as out:
        for index, command in enumerate(COMMANDS):
            plan = planned(command)
            record: dict[str, Any] = {"id": command.id, "mode": plan.mode, "reason": plan.reason}
            started = time.monotonic()
            log = logs / f"{index:03d}"
            if plan.mode == RUN:
                record["status"] = execute(command, plan, log)
            elif plan.mode == PARSE:
                record |= parse_only(plan, log, promised)
            record["seconds"] = round(time.monotonic() - started, 1)
            record["output"] = output_tail(log)
            out.write(json.dumps(record) + "\n")
            out.flush()


def execute(command: Command, plan: Plan, log: Path) -> int:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if command.language == "python" or plan.shell is not None:
        python = command.language == "python"
        argv = [sys.executable, "-c", command.text] if python else ["bash", "-c", plan.shell]
        with log.with_suffix(".out").open("wb") as stdout:
            try:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=SUBPROCESS_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                stdout.write(f"\ntimed out after {SUBPROCESS_TIMEOUT} s\n".encode())
                return 124
        return done.returncode
    with captured(log):
        return run_script(plan.program, substituted(plan.program, plan.args))


def run_script(program: str, args: list[str]) -> int:
    """`python PROGRAM ARGS` in this process (`runpy`) -> its exit status."""
    argv, sys.argv = sys.argv, [program, *args]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return status_of(program, lambda: runpy.run_path(program, run_name="__main__"))
    finally:
        sys.argv = argv
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def status_of(program: str, call: Callable[[], object]) -> int:
    """The exit status of `call()`, run as `python PROGRAM` would: 2 where PROGRAM is missing,
    a SystemExit's code, 1 (with its traceback) for another exception, else 0."""
    if not Path(program).is_file():
        print(f"python: can't open file {program!r}: no such file", file=sys.stderr)
        return 2
    try:
        call()
        return 0
    except SystemExit as exit_info:
        return exit_status(exit_info)
    except BaseException:
        traceback.print_exc()
        return 1


def exit_status(exit_info: SystemExit) -> int:
    if exit_info.code is None or isinstance(exit_info.code, int):
        return exit_info.code or 0
    print(exit_info.code, file=sys.stderr)
    return 1


@contextmanager
def captured(log: Path) -> Iterator[None]:
    """File descriptors 1 and 2 (Python's and C's output) into LOG.out and LOG.err."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.with_suffix(".out").open("wb") as out, log.with_suffix(".err").open("wb") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def output_tail(log: Path, chars: int = 2000) -> str:
    """The end of the command's stdout, then of its stderr."""
    parts = []
    for stream in ("out", "err"):
        path = log.with_suffix(f".{stream}")
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        parts += [f"--- std{stream} ---\n{text[-chars:]}"] if text.strip() else []
    return "\n".join(parts)


def parse_only(plan: Plan, log: Path, promised: list[Path]) -> dict[str, Any]:
    """Parses the arguments as the script does; checks the input paths it names; records
    the paths it would write, for the commands after it."""
    with captured(log):
        status = parse_arguments(plan.program, plan.args)
    printed = {}
    if plan.program == "scripts/train.py" and status == 0:
        try:
            printed = yaml.safe_load(log.with_suffix(".out").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            printed = {}
    missing = [path for path in input_paths(plan) if not available(path, promised)]
    promised.extend(output_paths(plan, printed))
    return {"status": status, "missing": missing}


def parse_arguments(program: str, args: list[str]) -> int:
    """0 where `program` accepts `args`, else its parser's exit status."""
    return status_of(program, lambda: parse(program, args))


def parse(program: str, args: list[str]) -> None:
    """Parse `args` with `program`'s own parser (SystemExit where it refuses them)."""
    if program == "scripts/train.py":
        from seq2seq.cli.train import main

        main([*args, "--print_config"])
    elif program.startswith("scripts/"):
        found = re.search(r"from (seq2seq\.cli\.\w+) import main", (REPO / program).read_text())
        importlib.import_module(found.group(1)).build_parser().parse_args(args)
    else:
        benchmark_parse(REPO / program, args)


class _Parsed(Exception):
    """Raised by a patched ArgumentParser.parse_args once it has parsed."""


def benchmark_parse(path: Path, args: list[str]) -> None:
    """The benchmark's `parse_args` (its argv, or sys.argv), else its `main()` stopped right
    after its parser returns."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv, sys.argv = sys.argv, [str(path), *args]
    try:
        parse = getattr(module, "parse_args", None)
        if parse is not None and inspect.signature(parse).parameters:
            parse(args)
            return
        if parse is not None:
            parse()
            return
        original = argparse.ArgumentParser.parse_args

        def parse_then_stop(self: argparse.ArgumentParser, *a: Any, **k: Any) -> None:
            original(self, *a, **k)
            raise _Parsed

        argparse.ArgumentParser.parse_args = parse_then_stop
        try:
            module.main()
        except _Parsed:
            return
        finally:
            argparse.ArgumentParser.parse_args = original
        raise AssertionError(f"{path.name}: main() returned without parsing arguments")
    finally:
        sys.argv = argv


def input_paths(plan: Plan) -> list[str]:
    paths = option_values(plan.args, INPUT_OPTIONS)
    if plan.program in POSITIONAL_INPUTS:
        paths += plan.args[: first_option(plan.args)]
    return [path for path in paths if path not in RESUME_WORDS]


def first_option(args: list[str]) -> int:
    return next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))


def output_paths(plan: Plan, printed: dict) -> list[Path]:
    """What the command would write: its output options, a training run's folders, a
    fetched corpus."""
    paths = [Path(p) for p in option_values(plan.args, OUTPUT_OPTIONS)]
    for section, key in (("trainer", "default_root_dir"), ("checkpoint", "dirpath")):
        value = (printed.get(section) or {}).get(key)
        paths += [Path(value)] if value else []
    if plan.program == "scripts/get_data.py" and plan.args[: first_option(plan.args)]:
        dest = option_values(plan.args, {"--dest"}) or ["data"]
        paths.append(Path(dest[-1]) / plan.args[0])
    return paths


def available(path: str, promised: list[Path]) -> bool:
    """A placeholder, an existing file, folder or corpus prefix (PREFIX.de), or within or
    above a path an earlier parse-only command would write."""
    found = Path(path)
    if path in PLACEHOLDERS or found.exists() or any(found.parent.glob(f"{found.name}.*")):
        return True
    return any(found == p or p in found.parents or found in p.parents for p in promised)


# The tests


@pytest.fixture(scope="module")
def document_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    """Runs the whole document once in a fresh checkout-like folder -> results by id; the
    folder (a GB of checkpoints) is removed afterwards."""
    work = tmp_path_factory.mktemp("checkout")
    for name in LINKED:
        (work / name).symlink_to(REPO / name)
    results = tmp_path_factory.mktemp("results") / "results.jsonl"
    # On a timeout, the commands it finished have their lines; the others fail as not run.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            [sys.executable, __file__, str(work), str(results)],
            cwd=work,
            env={**os.environ, **CHILD_ENV},
            stdin=subprocess.DEVNULL,
            timeout=DOCUMENT_TIMEOUT,
            check=False,
        )
    lines = results.read_text(encoding="utf-8").splitlines() if results.is_file() else []
    found = {record["id"]: record for record in map(json.loads, lines)}
    print("\n".join(f"{r['seconds']:6.1f} s  {r['mode']:10} {i}" for i, r in found.items()))
    yield found
    shutil.rmtree(work, ignore_errors=True)


def test_documents_have_commands() -> None:
    """The reader finds the README's commands (a broken fence parser finds none), each
    with its own id (results are keyed by it)."""
    assert any(c.doc == "README.md" and "scripts/train.py" in c.text for c in COMMANDS)
    assert any(c.language == "python" for c in COMMANDS)
    ids = [c.id for c in COMMANDS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_command_is_classified() -> None:
    unclassified = [
        f"{c.id}: {c.text}  ({plan.reason})"
        for c in COMMANDS
        if (plan := classify(c)).mode == UNCLASSIFIED
    ]
    assert not unclassified, (
        "code-block commands the test cannot place: classify each in "
        "tests/test_readme_commands.py (a script of ours runs; or add it to PARSE_ONLY, "
        "LAUNCHERS, SKIPPED_KINDS, PIPE_HELPERS or PLACEHOLDERS, with the reason):\n"
        + "\n".join(unclassified)
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_command(command: Command, request: pytest.FixtureRequest) -> None:
    plan = planned(command)
    if plan.mode == SKIP:
        pytest.skip(plan.reason)
    assert plan.mode != UNCLASSIFIED, f"{command.id}: unclassified: {command.text}"
    result = request.getfixturevalue("document_run").get(command.id)
    assert result is not None, f"{command.id}: not reached (the document run stopped early)"
    where = f"{command.id}: `{command.text}`"
    if plan.mode == RUN:
        assert result["status"] == 0, f"{where} exited {result['status']}:\n{result['output']}"
        return
    assert result["status"] == 0, (
        f"{where}: arguments rejected ({plan.reason}):\n{result['output']}"
    )
    assert not result["missing"], (
        f"{where}: no earlier command makes {result['missing']} (nor are they PLACEHOLDERS)"
    )
    if plan.absent:
        pytest.skip(f"{plan.reason}: its arguments parse")


if __name__ == "__main__":
    run_document(Path(sys.argv[1]), Path(sys.argv[2]))
