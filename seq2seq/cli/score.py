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
from seq2seq.rerank import format_nbest, read_nbest, rerank
from seq2seq.scoring import BATCH_TOKENS, PairScore, score_pairs
from seq2seq.textfiles import atomic_output, count_lines, open_text_lines, read_text_lines
from seq2seq.translator import Translator


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    add_checkpoint_argument(parser)
    parser.add_argument("--src", required=True, help="source text, one sentence a line")
    targets = parser.add_mutually_exclusive_group(required=True)
    targets.add_argument("--tgt", help="its translations, line by line")
    targets.add_argument(
        "--nbest",
        metavar="FILE",
        help="translate.py's --nbest output for --src (tsv or jsonl): each candidate gets "
        "the model's per-piece log-probability as one more feature, and each line's "
        "candidates are reranked by --weights",
    )
    rerank = parser.add_argument_group("reranking (with --nbest)")
    rerank.add_argument(
        "--reverse",
        action="store_true",
        help="the checkpoint translates the other way: score the source given each candidate "
        "(a noisy-channel feature)",
    )
    rerank.add_argument(
        "--weights",
        type=float,
        nargs="+",
        help="one per feature, search's score first, this model's last (default: 1 each)",
    )
    rerank.add_argument("--best", action="store_true", help="write each line's best text only")
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
        if args.nbest is None:
            check_aligned(args.src, args.tgt)
        elif args.alignment:
            raise UserError("--alignment scores given pairs (--tgt), not n-best lists")
        translator = Translator.from_checkpoints(
            args.checkpoint, device=args.device, rule=args.ensemble_rule
        )
        if args.alignment and not translator.has_attention:
            raise UserError("--alignment needs a model with attention")
        if args.nbest is not None:
            rescore_nbest(translator, args)
            return
        pairs = zip(open_text_lines(args.src), open_text_lines(args.tgt), strict=True)
        with atomic_output(args.output) as out:
            score_stream(translator, pairs, out, args)
    except UserError as err:
        exit_on_user_error(err)


def rescore_nbest(translator: Translator, args: argparse.Namespace) -> None:
    """Add the model's score of each candidate of `args.nbest` as a feature, rerank each
    line's candidates by `args.weights`, write them (or each line's best)."""
    sources = read_text_lines(args.src)
    groups = read_nbest(args.nbest, len(sources))
    flat = [(src, c) for src, group in zip(sources, groups, strict=True) for c in group]
    pairs = [(c.text, src) if args.reverse else (src, c.text) for src, c in flat]
    srcs, tgts = ([pair[side] for pair in pairs] for side in (0, 1))
    scores = score_pairs(translator, srcs, tgts, batch_tokens=args.batch_tokens)
    for (_, candidate), score in zip(flat, scores, strict=True):
        candidate.features.append(score.per_piece)
    weights = args.weights or [1.0] * len(groups[0][0].features)
    ranked = rerank(groups, weights)
    with atomic_output(args.output) as out:
        out.writelines(format_nbest(ranked, weights, args.format, best=args.best))


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
