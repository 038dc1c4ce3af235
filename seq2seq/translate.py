"""`scripts/translate.py`: translate a text file with a checkpoint, one line out per line in."""

import argparse
import logging
import sys

from seq2seq.errors import UserError, exit_on_user_error
from seq2seq.textfiles import atomic_output, read_text_lines
from seq2seq.translator import Translator


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by translate.py and evaluate.py --checkpoint."""
    group = parser.add_argument_group("decoding")
    group.add_argument("--beam-size", type=int, default=5, help="beam width (default 5)")
    group.add_argument("--greedy", action="store_true", help="greedy search (same as beam 1)")
    group.add_argument("--alpha", type=float, default=1.0, help="length normalization exponent")
    group.add_argument("--max-len-a", type=float, default=1.5, help="max length = a*src_len + b")
    group.add_argument("--max-len-b", type=int, default=10, help="see --max-len-a")
    group.add_argument("--batch-tokens", type=int, default=4096, help="source tokens per batch")
    group.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    group.add_argument("--progress", action="store_true", help="show a progress bar on stderr")


def translate_lines(args: argparse.Namespace, sentences: list[str]) -> list[str]:
    """Load `args.checkpoint` and translate `sentences` with the decoding options in `args`."""
    translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
    return translator.translate(
        sentences,
        beam_size=1 if args.greedy else args.beam_size,
        alpha=args.alpha,
        max_len_a=args.max_len_a,
        max_len_b=args.max_len_b,
        batch_tokens=args.batch_tokens,
        progress=args.progress or sys.stderr.isatty(),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by scripts/train.py")
    parser.add_argument("--input", default="-", help="source text, one sentence a line (- = stdin)")
    parser.add_argument("--output", default="-", help="where translations go (- = stdout)")
    add_decoding_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[seq2seq] %(message)s")
    try:
        translations = translate_lines(args, read_text_lines(args.input))
        with atomic_output(args.output) as out:
            out.writelines(text + "\n" for text in translations)
    except UserError as err:
        exit_on_user_error(err)
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        sys.exit(130)
