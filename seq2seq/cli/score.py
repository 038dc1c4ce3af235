"""`scripts/score.py`: score given translations with a checkpoint, one line out per pair in."""

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from itertools import islice
from typing import TextIO

from tqdm import tqdm

from seq2seq.alignment import pharaoh
from seq2seq.cli.translate import CHUNK_LINES, add_checkpoint_argument, add_model_arguments
from seq2seq.errors import ArgumentParser, UserError, exit_on_user_error
from seq2seq.scoring import BATCH_TOKENS, PairScore, score_pairs
from seq2seq.textfiles import atomic_output, count_lines, open_text_lines
from seq2seq.translator import Translator


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    add_checkpoint_argument(parser)
    parser.add_argument("--src", required=True, help="source text, one sentence a line")
    parser.add_argument("--tgt", required=True, help="its translations, line by line")
    parser.add_argument("--output", default="-", help="where scores go (- = stdout)")
    parser.add_argument(
        "--format",
        choices=["tsv", "jsonl"],
        default="tsv",
        help="tsv: log_prob<TAB>per_piece<TAB>pieces; jsonl: JSON objects with line too",
    )
    parser.add_argument(
        "--alignment",
        action="store_true",
        help="add each pair's word alignment from the attention of the model forced to output "
        "the target (Pharaoh i-j pairs): a last tsv column, or an alignment field in jsonl",
    )
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=BATCH_TOKENS,
        help=f"padded source or target tokens per batch (default {BATCH_TOKENS})",
    )
    add_model_arguments(parser)
    parser.add_argument("--progress", action="store_true", help="progress bar even without a tty")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[seq2seq] %(message)s")
    try:
        check_aligned(args.src, args.tgt)
        translator = Translator.from_checkpoints(
            args.checkpoint, device=args.device, rule=args.ensemble_rule
        )
        if args.alignment and not translator.has_attention:
            raise UserError("--alignment needs a model with attention")
        pairs = zip(open_text_lines(args.src), open_text_lines(args.tgt), strict=True)
        with atomic_output(args.output) as out:
            score_stream(translator, pairs, out, args)
    except UserError as err:
        exit_on_user_error(err)


def check_aligned(src: str, tgt: str) -> None:
    """UserError unless `src` and `tgt` are files (not stdin) with as many lines."""
    if "-" in (src, tgt):
        raise UserError("--src and --tgt must be files: stdin (-) cannot be read twice")
    src_lines, tgt_lines = count_lines(src), count_lines(tgt)
    if src_lines != tgt_lines:
        raise UserError(
            f"line counts differ: --src {src} has {src_lines} lines, --tgt {tgt} has {tgt_lines}"
        )


def score_stream(
    translator: Translator,
    pairs: Iterator[tuple[str, str]],
    out: TextIO,
    args: argparse.Namespace,
) -> None:
    """Score `CHUNK_LINES` pairs at a time, writing each chunk's lines before reading on."""
    first_line = 1
    progress = args.progress or sys.stderr.isatty()
    with tqdm(unit="pair", disable=not progress) as bar:
        while chunk := list(islice(pairs, CHUNK_LINES)):
            sources, targets = (list(side) for side in zip(*chunk, strict=True))
            scores = score_pairs(
                translator,
                sources,
                targets,
                batch_tokens=args.batch_tokens,
                first_line=first_line,
                alignment=args.alignment,
            )
            lines = format_lines(
                scores, fmt=args.format, first_line=first_line, alignment=args.alignment
            )
            out.writelines(lines)
            out.flush()
            first_line += len(chunk)
            bar.update(len(chunk))


def format_lines(
    scores: list[PairScore], *, fmt: str, first_line: int = 1, alignment: bool = False
) -> Iterator[str]:
    """One line per pair, in input order, numbered from `first_line`; a skipped pair's
    scores are nan in tsv, null in jsonl; with `alignment` its Pharaoh pairs in a last
    column or field (a skipped pair's: empty in tsv, null in jsonl)."""
    for number, score in enumerate(scores, start=first_line):
        skipped = score.pieces == 0
        aligned = None if skipped else pharaoh(score.alignment or [])
        if fmt == "jsonl":
            fields = {
                "line": number,
                "log_prob": None if skipped else score.log_prob,
                "per_piece": None if skipped else score.per_piece,
                "pieces": score.pieces,
            }
            yield json.dumps(fields | ({"alignment": aligned} if alignment else {})) + "\n"
        else:
            columns = [f"{score.log_prob:.6f}", f"{score.per_piece:.6f}", str(score.pieces)]
            columns += [aligned or ""] if alignment else []
            yield "\t".join(columns) + "\n"
