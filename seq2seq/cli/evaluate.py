"""`scripts/evaluate.py`: score hypotheses against references with sacrebleu.

Either score a file (`--hyp FILE --ref FILE`), or translate and score in one go
(`--checkpoint CKPT --src FILE --ref FILE`, with translate.py's decoding options).
"""

import argparse
import json
import logging

from sacrebleu.metrics import BLEU

from seq2seq.checkpoint import load_checkpoint
from seq2seq.cli.translate import add_decoding_arguments, cpu_speed_options, decoding_options
from seq2seq.errors import ArgumentParser, UserError, exit_on_user_error
from seq2seq.metrics import CorpusScore, corpus_scores
from seq2seq.textfiles import read_text_lines
from seq2seq.translator import Translator


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n", 1)[0].split(":", 1)[1])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hyp", help="detokenized hypotheses, one a line")
    source.add_argument(
        "--checkpoint",
        nargs="+",
        help="translate --src with this checkpoint (several: their ensemble), then score",
    )
    parser.add_argument("--src", help="source sentences (with --checkpoint)")
    parser.add_argument("--ref", required=True, action="append", help="references (repeatable)")
    parser.add_argument(
        "--metrics", nargs="+", default=["bleu", "chrf", "ter"], choices=["bleu", "chrf", "ter"]
    )
    parser.add_argument(
        "--tokenize",
        choices=list(BLEU.TOKENIZERS),
        default=None,
        help="sacrebleu BLEU tokenizer (default: 13a, or with --checkpoint the one its "
        "validation used, --model.bleu_tokenize)",
    )
    parser.add_argument("--lowercase", action="store_true", help="case-insensitive scores")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_decoding_arguments(parser)
    return parser


def check_line_counts(hyp_name: str, hypotheses: list[str], refs: dict[str, list[str]]) -> None:
    """Every reference must have as many lines as the hypotheses."""
    for ref, lines in refs.items():
        if len(lines) != len(hypotheses):
            counts = f"{hyp_name} has {len(hypotheses)} lines, {ref} has {len(lines)}"
            raise UserError(f"line counts differ: {counts}")


def score(args: argparse.Namespace) -> list[CorpusScore]:
    """Read (or produce) the hypotheses, check line counts, score."""
    if args.checkpoint is not None and args.src is None:
        raise UserError("--checkpoint needs --src, the source sentences to translate")
    decoding = decoding_options(args) if args.checkpoint is not None else {}
    references = {ref: read_text_lines(ref) for ref in args.ref}
    tokenize = args.tokenize
    if args.checkpoint is not None:
        sources = read_text_lines(args.src)
        check_line_counts(args.src, sources, references)
        loaded = [(load_checkpoint(path, mmap=True), path) for path in args.checkpoint]
        speed = cpu_speed_options(args)
        translator = Translator.from_all_loaded(loaded, args.device, args.ensemble_rule, **speed)
        hypotheses = translator.translate(sources, **decoding)
        if tokenize is None:  # the BLEU tokenizer of the (first) model's validation
            tokenize = loaded[0][0]["hyper_parameters"].get("bleu_tokenize")
    else:
        hypotheses = read_text_lines(args.hyp)
        check_line_counts(args.hyp, hypotheses, references)
    options = {"tokenize": tokenize, "lowercase": args.lowercase}
    return corpus_scores(
        hypotheses, list(references.values()), metrics=tuple(args.metrics), **options
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[seq2seq] %(message)s")
    try:
        scores = score(args)
    except UserError as err:
        exit_on_user_error(err)
    if args.json:
        print(json.dumps({s.name: {"score": s.score, "signature": s.signature} for s in scores}))
    else:
        for result in scores:
            print(f"{result.text}\n  signature: {result.signature}")
