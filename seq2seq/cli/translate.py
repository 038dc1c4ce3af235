"""`scripts/translate.py`: translate a text file with a checkpoint, one line out per line in."""

import argparse
import json
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import fields
from itertools import islice
from pathlib import Path
from types import FrameType
from typing import TextIO, get_args

from tqdm import tqdm

from seq2seq.alignment import pharaoh
from seq2seq.ensemble import EnsembleRule
from seq2seq.errors import ArgumentParser, UserError, exit_on_user_error
from seq2seq.plots import save_attention_plot
from seq2seq.quantize import Quantize
from seq2seq.sampling import Sampling
from seq2seq.search_rules import MAX_LEN_A, MAX_LEN_B, CoveragePenalty
from seq2seq.textfiles import atomic_output, open_text_lines, utf8_stdout
from seq2seq.translator import BATCH_TOKENS, Precision, Translation, Translator

log = logging.getLogger(__name__)

CHUNK_LINES = 2000  # input lines translated at a time: memory stays flat on long inputs


class Terminated(Exception):
    """SIGTERM arrived."""


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by translate.py and evaluate.py --checkpoint (but --checkpoint)."""
    add_model_arguments(parser)
    add_cpu_speed_arguments(parser)
    group = parser.add_argument_group("decoding")
    group.add_argument("--beam-size", type=int, default=5, help="beam width (default 5)")
    group.add_argument("--greedy", action="store_true", help="greedy search (same as beam 1)")
    group.add_argument(
        "--length-penalty",
        choices=["none", "average", "gnmt"],
        default="average",
        help="score / len**alpha (average) or / ((5+len)/6)**alpha (gnmt)",
    )
    group.add_argument("--alpha", type=float, default=1.0, help="length penalty exponent")
    group.add_argument(
        "--coverage-penalty",
        choices=get_args(CoveragePenalty),
        default="none",
        help="wu: add beta * sum over source tokens of log(min(attention received, 1)) to "
        "each finished output's score (Wu et al., 2016; default none)",
    )
    group.add_argument("--beta", type=float, default=0.0, help="coverage penalty weight")
    group.add_argument(
        "--max-len-a",
        type=float,
        default=None,
        help="output length limit a*src_len + b (default: the checkpoint's, as its validation "
        f"used; {MAX_LEN_A:g} unless trained with another --model.max_len_a)",
    )
    group.add_argument(
        "--max-len-b",
        type=int,
        default=None,
        help=f"see --max-len-a (default: the checkpoint's; {MAX_LEN_B} unless set in training)",
    )
    group.add_argument("--min-len", type=int, default=0, help="fewest output tokens")
    group.add_argument("--no-repeat-ngram", type=int, default=0, help="block repeated n-grams")
    group.add_argument(
        "--batch-tokens",
        type=int,
        default=BATCH_TOKENS,
        help=f"source tokens times beam size per batch (default {BATCH_TOKENS})",
    )
    group.add_argument(
        "--precision",
        choices=get_args(Precision),
        default="32",
        help="bf16: bfloat16 autocast, faster on CPUs with AVX512-BF16 or AMX, slower on "
        "others; may change a few outputs (default 32)",
    )
    group.add_argument("--progress", action="store_true", help="progress bar even without a tty")
    add_sampling_arguments(parser)


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, required: one model or an ensemble."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="a .ckpt written by scripts/train.py; several: their ensemble",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--device and --ensemble-rule: where the checkpoints run and how several combine."""
    group = parser.add_argument_group("model")
    group.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    group.add_argument(
        "--ensemble-rule",
        choices=get_args(EnsembleRule),
        default="logprob",
        help="with several checkpoints: average their log-probabilities (logprob, default) "
        "or take the log of their mean probability (prob)",
    )


def add_cpu_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """--quantize and --shortlist: faster decoding on CPU (`cpu_speed_options` reads them)."""
    group = parser.add_argument_group("faster decoding on CPU")
    group.add_argument(
        "--quantize",
        choices=get_args(Quantize),
        default="none",
        help="int8: the decoder's per-step layers with int8 weights (CPU only; default none)",
    )
    group.add_argument(
        "--shortlist",
        metavar="FILE",
        help="decode each sentence over its own candidate target pieces, from a file of "
        "scripts/shortlist.py built for the checkpoint's SentencePiece models",
    )


def cpu_speed_options(args: argparse.Namespace) -> dict[str, str | None]:
    """The `quantize` and `shortlist` options of `Translator.from_checkpoints` in `args`."""
    return {"quantize": args.quantize, "shortlist": args.shortlist}


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """--sampling and its options; None marks an option not given (see `sampling_options`)."""
    group = parser.add_argument_group("sampling (see docs/sampling.md)")
    group.add_argument(
        "--sampling",
        action="store_true",
        help="draw random translations instead of searching (--nbest N: N per line); "
        "the beam size is ignored",
    )
    group.add_argument(
        "--topk",
        type=int,
        metavar="K",
        help="sample from the K most probable tokens (default 0: all)",
    )
    group.add_argument(
        "--topp",
        type=float,
        metavar="P",
        help="sample from the fewest most probable tokens holding P of the mass (default 1.0)",
    )
    group.add_argument(
        "--temperature",
        type=float,
        metavar="T",
        help="divide log-probs by T before sampling (default 1.0)",
    )
    group.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="with the line number, fixes each line's samples (default 1)",
    )


def decoding_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `Translator.translate` that `args` sets; bad values: UserError."""
    if args.beam_size < 1:
        raise UserError(f"--beam-size must be at least 1, got {args.beam_size}")
    if args.coverage_penalty != "none" and args.beta <= 0:
        raise UserError(f"--coverage-penalty {args.coverage_penalty} needs --beta above 0")
    return {
        "beam_size": 1 if args.greedy else args.beam_size,
        "sampling": sampling_options(args),
        "length_penalty": args.length_penalty,
        "alpha": args.alpha,
        "coverage_penalty": args.coverage_penalty,
        "beta": args.beta,
        "max_len_a": args.max_len_a,
        "max_len_b": args.max_len_b,
        "min_len": args.min_len,
        "no_repeat_ngram": args.no_repeat_ngram,
        "batch_tokens": args.batch_tokens,
        "precision": args.precision,
        "progress": args.progress or sys.stderr.isatty(),
    }


def sampling_options(args: argparse.Namespace) -> Sampling | None:
    """The `Sampling` that --sampling asks for, or None; UserError for a bad value or a
    sampling option given without --sampling."""
    names = [field.name for field in fields(Sampling)]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if not args.sampling:
        if given:
            options = ", ".join(f"--{name}" for name in given)
            raise UserError(f"{options} given without --sampling")
        return None
    try:
        return Sampling(**given)
    except ValueError as err:
        raise UserError(f"--sampling: {err}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    add_checkpoint_argument(parser)
    parser.add_argument("--input", default="-", help="source text, one sentence a line (- = stdin)")
    parser.add_argument("--output", default="-", help="where translations go (- = stdout)")
    parser.add_argument(
        "--nbest",
        type=int,
        default=1,
        help="write the N best (--sampling: N samples) per input line",
    )
    parser.add_argument(
        "--format",
        choices=["text", "jsonl"],
        default="text",
        help="text: one line (n-best: score<TAB>text); jsonl: JSON objects",
    )
    parser.add_argument(
        "--alignment",
        action="store_true",
        help="add each output's word alignment from attention (Pharaoh i-j pairs, words "
        "counted from 0): a last TSV column, or an alignment field in jsonl",
    )
    parser.add_argument("--attention-plot", metavar="DIR", help="write attention heat maps here")
    parser.add_argument(
        "--attention-plot-count",
        type=int,
        default=10,
        metavar="K",
        help="plot the first K sentences (default 10)",
    )
    parser.add_argument(
        "--interactive",
        action="store_true",
        help="translate each stdin line as it arrives, flushing its output (for pipes)",
    )
    add_decoding_arguments(parser)
    return parser


def format_lines(
    results: list[list[Translation]],
    *,
    nbest: int,
    fmt: str,
    first_line: int = 1,
    alignments: list[list[str]] | None = None,
) -> Iterator[str]:
    """The output lines: `nbest` per input line, in input order, numbered from `first_line`;
    with `alignments` (Pharaoh, per input line and rank) a last column or field."""
    for index, ranked in enumerate(results):
        for rank, translation in enumerate(ranked):
            alignment = None if alignments is None else alignments[index][rank]
            if fmt == "jsonl":
                fields = {
                    "line": first_line + index,
                    "rank": rank + 1,
                    "score": translation.score,
                    "text": translation.text,
                }
                fields |= {} if alignment is None else {"alignment": alignment}
                yield json.dumps(fields, ensure_ascii=False) + "\n"
                continue
            columns = [f"{translation.score:.6f}"] if nbest > 1 else []
            columns += [translation.text, *([] if alignment is None else [alignment])]
            yield "\t".join(columns) + "\n"


def pharaoh_alignments(
    translator: Translator, sources: list[str], results: list[list[Translation]]
) -> list[list[str]]:
    """Each translation's word alignment with its source, Pharaoh-formatted."""
    return [
        [pharaoh(translator.alignment(source, t)) for t in ranked]
        for source, ranked in zip(sources, results, strict=True)
    ]


def write_attention_plots(
    translator: Translator,
    sources: list[str],
    results: list[list[Translation]],
    folder: Path,
    count: int,
    first_line: int,
) -> None:
    """One PNG per sentence for the non-empty sentences with attention among the first
    `count` lines; `sources` start at line `first_line`."""
    numbered = enumerate(zip(sources, results, strict=True), start=first_line)
    for number, (source, ranked) in numbered:
        best = ranked[0]
        if number > count or best.attention is None or not source.strip():
            continue
        src_pieces, tgt_pieces = translator.pieces(source, best)
        save_attention_plot(best.attention, src_pieces, tgt_pieces, folder / f"{number:05d}.png")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[seq2seq] %(message)s")
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        options = decoding_options(args) | {"attention": bool(args.attention_plot)}
        check_arguments(args, options["beam_size"])
        translator = Translator.from_checkpoints(
            args.checkpoint, args.device, args.ensemble_rule, **cpu_speed_options(args)
        )
        if args.alignment and not translator.has_attention:
            raise UserError("--alignment needs a model with attention")
        if args.interactive:
            translate_interactively(translator, args, options)
            return
        lines = open_text_lines(args.input)
        # Opened before decoding, so that a bad output path fails at once, not after hours.
        with atomic_output(args.output) as out:
            translate_stream(translator, lines, out, args, options)
    except UserError as err:
        exit_on_user_error(err)
    except KeyboardInterrupt:
        _exit_interrupted("interrupted", 130, args.output)
    except Terminated:
        _exit_interrupted("terminated", 143, args.output)


def check_arguments(args: argparse.Namespace, beam_size: int) -> None:
    """UserError for options that do not go together, or a missing plot folder."""
    if args.sampling and args.nbest < 1:
        raise UserError(f"--nbest must be at least 1, got {args.nbest}")
    if not args.sampling and not 1 <= args.nbest <= beam_size:
        beam = "1 with --greedy" if args.greedy else beam_size
        raise UserError(f"--nbest must be between 1 and the beam size ({beam}), got {args.nbest}")
    if args.interactive and (args.input, args.output, args.attention_plot) != ("-", "-", None):
        raise UserError(
            "--interactive reads stdin and writes stdout: no --input, --output or --attention-plot"
        )
    if args.attention_plot and not Path(args.attention_plot).is_dir():
        raise UserError(f"--attention-plot: directory {args.attention_plot} does not exist")


def translate_stream(
    translator: Translator,
    lines: Iterator[str],
    out: TextIO,
    args: argparse.Namespace,
    options: dict,
) -> None:
    """Translate `CHUNK_LINES` lines at a time (each chunk sorted by length into batches),
    writing each chunk's output lines before reading the next. Attention is kept only
    for the chunks with lines to plot."""
    progress, options = options["progress"], options | {"progress": False}  # one bar here
    first_line = 1
    with tqdm(unit="sent", disable=not progress) as bar:
        while chunk := list(islice(lines, CHUNK_LINES)):
            plot = bool(args.attention_plot) and first_line <= args.attention_plot_count
            attention = {"attention": plot or args.alignment}
            found = translator.translate_nbest(
                chunk, nbest=args.nbest, first_line=first_line, **options | attention
            )
            if plot:
                folder, count = Path(args.attention_plot), args.attention_plot_count
                write_attention_plots(translator, chunk, found, folder, count, first_line)
            alignments = pharaoh_alignments(translator, chunk, found) if args.alignment else None
            out.writelines(
                format_lines(
                    found,
                    nbest=args.nbest,
                    fmt=args.format,
                    first_line=first_line,
                    alignments=alignments,
                )
            )
            out.flush()
            first_line += len(chunk)
            bar.update(len(chunk))


def translate_interactively(
    translator: Translator, args: argparse.Namespace, options: dict
) -> None:
    """Each stdin line translated alone as soon as it arrives, its output flushed."""
    options = options | {"progress": False, "attention": args.alignment}
    out = utf8_stdout()
    for number, line in enumerate(open_text_lines("-"), start=1):
        found = translator.translate_nbest([line], nbest=args.nbest, first_line=number, **options)
        alignments = pharaoh_alignments(translator, [line], found) if args.alignment else None
        formatted = format_lines(
            found, nbest=args.nbest, fmt=args.format, first_line=number, alignments=alignments
        )
        out.writelines(formatted)
        out.flush()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def _exit_interrupted(what: str, status: int, output: str) -> None:
    print(what + ("" if output == "-" else ": no output written"), file=sys.stderr)
    sys.exit(status)
