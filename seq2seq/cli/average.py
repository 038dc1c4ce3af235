"""`scripts/average_checkpoints.py`: average the weights of checkpoints of one run.

Either name them (`--inputs A.ckpt B.ckpt ...`) or take a run's kept checkpoints
(`--run-dir DIR` with `--best N` or `--last N`). The output translates and starts
`--init_from` runs like any checkpoint; it holds no training state to resume.
"""

import argparse
from pathlib import Path

import torch

from seq2seq.checkpoint import average_checkpoints, run_checkpoints
from seq2seq.errors import ArgumentParser, UserError, exit_on_user_error
from seq2seq.textfiles import atomic_binary_output


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n", 1)[0].split(":", 1)[1])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--inputs", nargs="+", type=Path, metavar="CKPT", help="checkpoints")
    source.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        help="a run's checkpoint folder (--checkpoint.dirpath): its best-*.ckpt files",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--best", type=int, metavar="N", help="the N of highest validation BLEU")
    choice.add_argument("--last", type=int, metavar="N", help="the N of highest step")
    parser.add_argument("--output", required=True, help="the averaged checkpoint")
    return parser


def chosen_checkpoints(args: argparse.Namespace) -> list[Path]:
    """`--inputs`, or the `--best`/`--last` checkpoints of `--run-dir`."""
    if args.run_dir is not None:
        return run_checkpoints(args.run_dir, args.best, args.last)
    if args.best is not None or args.last is not None:
        raise UserError("--best and --last choose from --run-dir; with --inputs, drop them")
    return args.inputs


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        paths = chosen_checkpoints(args)
        checkpoint = average_checkpoints(paths)
        with atomic_binary_output(args.output) as out:
            torch.save(checkpoint, out)
    except UserError as err:
        exit_on_user_error(err)
    for path in paths:
        print(f"averaged {path}")
    print(f"wrote {args.output}: the mean weights of {len(paths)} checkpoint(s)")
