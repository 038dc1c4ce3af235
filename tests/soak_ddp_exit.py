"""Soak test of DDP process exit on CPU (gloo): the 2-process demo training run, N times.

    python tests/soak_ddp_exit.py --runs 30 [--validate-spawn 10]

Each run is scripts/train.py on the demo config under `--trainer.strategy ddp`, as
tests/test_distributed.py::test_ddp_training_run_of_the_demo runs it, in one working folder
(the demo corpus and tokenizer cache are built once; runs/ is removed between runs). A run
fails if the launcher exits non-zero or either process wrote "terminate called" (rank 1's
exit code does not reach the launcher). `--validate-spawn N` then runs N times the ddp_spawn
validation test. Prints one line per run and `K of N runs exited 0`; exits 1 if any failed.
Not collected by pytest: it takes about a minute a run.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABORT = "terminate called"  # what the C++ runtime writes before SIGABRT
TRAIN = [
    *("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"),
    *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "20"),
    *("--trainer.enable_progress_bar", "false"),
]
VALIDATE = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_distributed.py"]


def soak(name: str, command: list[str], cwd: Path, runs: int, before_run=None) -> int:
    """Run `command` `runs` times in `cwd`; print a line per run and the total; the failures."""
    failed = 0
    for i in range(1, runs + 1):
        if before_run is not None:
            before_run()
        start = time.monotonic()
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
        seconds = time.monotonic() - start
        aborts = (result.stdout + result.stderr).count(ABORT)
        ok = result.returncode == 0 and aborts == 0
        failed += not ok
        note = "" if ok else f", {aborts} x '{ABORT}'\n{result.stderr[-1500:]}"
        print(f"{name} run {i}: exit code {result.returncode}, {seconds:.1f} s{note}", flush=True)
    print(f"{runs - failed} of {runs} {name} runs exited 0", flush=True)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="2-process DDP training runs")
    parser.add_argument(
        "--validate-spawn", type=int, default=0, help="runs of the ddp_spawn validation test"
    )
    args = parser.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="soak_ddp_exit.") as tmp:
        work = Path(tmp)
        demo = ["--config", str(ROOT / "configs" / "demo.yaml")]
        train = [sys.executable, str(ROOT / "scripts" / "train.py"), *demo, *TRAIN]
        failed += soak(
            "training",
            train,
            work,
            args.runs,
            before_run=lambda: shutil.rmtree(work / "runs", ignore_errors=True),
        )
    if args.validate_spawn:
        validate = [sys.executable, *VALIDATE, "-k", "validation_equals"]
        failed += soak("validation", validate, ROOT, args.validate_spawn)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
