"""`scripts/evaluate.py`: score a hypothesis file against references with sacrebleu."""

import argparse
import json

from seq2seq.errors import UserError, exit_on_user_error
from seq2seq.metrics import corpus_scores
from seq2seq.textfiles import read_text_lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--hyp", required=True, help="detokenized hypotheses, one a line")
    parser.add_argument("--ref", required=True, action="append", help="references (repeatable)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["bleu", "chrf", "ter"],
        choices=["bleu", "chrf", "ter"],
        help="what to score",
    )
    parser.add_argument("--tokenize", default=None, help="sacrebleu BLEU tokenizer (default 13a)")
    parser.add_argument("--lowercase", action="store_true", help="case-insensitive scores")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def evaluate_files(hyp: str, refs: list[str], **options) -> list:
    """Read files, check that line counts match, score."""
    hypotheses = read_text_lines(hyp)
    references = [read_text_lines(ref) for ref in refs]
    for ref, lines in zip(refs, references, strict=True):
        if len(lines) != len(hypotheses):
            raise UserError(
                f"line counts differ: {hyp} has {len(hypotheses)} lines, {ref} has {len(lines)}"
            )
    return corpus_scores(hypotheses, references, **options)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        scores = evaluate_files(
            args.hyp,
            args.ref,
            metrics=tuple(args.metrics),
            tokenize=args.tokenize,
            lowercase=args.lowercase,
        )
    except UserError as err:
        exit_on_user_error(err)
    if args.json:
        print(json.dumps({s.name: {"score": s.score, "signature": s.signature} for s in scores}))
    else:
        for score in scores:
            print(f"{score.text}\n  signature: {score.signature}")
