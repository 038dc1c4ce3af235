"""`scripts/diagnose.py`: look inside trained models.

`gradients`: for real sentence pairs under teacher forcing, the norm of the loss's gradient
with respect to each encoder state h_t (through the recurrence, the attention and the
summary), averaged by distance from the end of the source: where gradients vanish or
explode through time (see docs/gradients.md). Several checkpoints give one curve each.
"""

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
from torch import Tensor

from seq2seq.batching import TokenBatchSampler, collate, example_cost
from seq2seq.cli.evaluate import check_line_counts
from seq2seq.errors import ArgumentParser, UserError, exit_on_user_error
from seq2seq.gradients import gradient_flow
from seq2seq.plots import check_labels, save_gradient_flow_plot
from seq2seq.textfiles import atomic_output, read_text_lines
from seq2seq.translator import Translator

log = logging.getLogger(__name__)

BATCH_TOKENS = 4000  # padded source or target positions per batch (at least the longest pair)
TABLE_DISTANCES = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500)
Curve = tuple[Tensor, Tensor]  # (N,) mean norms, (N,) sentences counted, by distance


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n", 1)[0].split(":", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gradients = commands.add_parser(
        "gradients",
        help="gradient norm by distance from the end of the source",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    gradients.add_argument(
        "--checkpoint", nargs="+", required=True, metavar="CKPT", help="one curve each"
    )
    gradients.add_argument("--src", required=True, help="source sentences, one a line")
    gradients.add_argument("--ref", required=True, help="their references (the targets)")
    gradients.add_argument(
        "--output", required=True, metavar="DIR", help="writes gradients.csv and gradients.png"
    )
    gradients.add_argument(
        "--sentences", type=int, default=200, metavar="N", help="the first N pairs (default 200)"
    )
    gradients.add_argument(
        "--labels", nargs="+", help="legend labels, one per checkpoint (default: the paths)"
    )
    gradients.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    return parser


def diagnose_gradients(args: argparse.Namespace) -> dict[str, Curve]:
    """Read the pairs, measure each checkpoint, write the CSV and the PNG -> curves by label."""
    if args.sentences < 1:
        raise UserError(f"--sentences must be at least 1, got {args.sentences}")
    labels = args.labels or args.checkpoint
    check_labels(labels, args.checkpoint, "checkpoints")
    sources, references = read_text_lines(args.src), read_text_lines(args.ref)
    check_line_counts(args.src, sources, {args.ref: references})
    if not sources:
        raise UserError(f"{args.src} is empty: no sentence pairs to measure")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a folder")
    pairs = sources[: args.sentences], references[: args.sentences]
    curves = {
        label: checkpoint_curve(Translator.from_checkpoint(path, args.device), *pairs)
        for label, path in zip(labels, args.checkpoint, strict=True)
    }
    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "gradients.csv", curves)
    save_gradient_flow_plot(
        {label: curve.numpy() for label, (curve, _) in curves.items()}, output / "gradients.png"
    )
    return curves


def checkpoint_curve(translator: Translator, sources: list[str], references: list[str]) -> Curve:
    """The gradient flow of the translator's model over the pairs."""
    model, tokenizer = translator.model, translator.tokenizer
    src_ids = tokenizer.encode_src([line.strip() for line in sources])
    tgt_ids = tokenizer.encode_tgt([line.strip() for line in references])
    limit = translator.max_src_len
    cut = sum(limit is not None and len(ids) > limit for ids in src_ids)
    if cut:
        log.warning("%d source(s) longer than %d pieces, cut to it", cut, limit)
    examples = [
        {"src_ids": s[:limit], "tgt_ids": t, "index": i}
        for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True))
    ]
    costs = example_cost(
        np.array([len(e["src_ids"]) for e in examples]), np.array([len(t) for t in tgt_ids])
    )
    sampler = TokenBatchSampler(costs, max(BATCH_TOKENS, int(costs.max())), shuffle=False)
    ids = {"pad_id": model.pad_id, "bos_id": model.bos_id, "eos_id": model.eos_id}
    batches = (collate([examples[i] for i in rows], **ids) for rows in sampler)
    return gradient_flow(model, batches)


def write_csv(path: Path, curves: dict[str, Curve]) -> None:
    """One row per checkpoint and distance: checkpoint, distance, mean_norm, sentences."""
    with atomic_output(str(path)) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["checkpoint", "distance", "mean_norm", "sentences"])
        for label, (curve, counts) in curves.items():
            for distance, (norm, count) in enumerate(
                zip(curve.tolist(), counts.tolist(), strict=True)
            ):
                if count:
                    writer.writerow([label, distance, f"{norm:.9g}", count])


def print_table(curves: dict[str, Curve]) -> None:
    """The mean norms at a few distances, one column per checkpoint."""
    width = max(12, *(len(label) for label in curves))
    print("mean |dL/dh_t| by distance from the end of the source")
    print("distance" + "".join(f"  {label:>{width}}" for label in curves))
    longest = max(len(counts) for _, counts in curves.values())
    for distance in (d for d in TABLE_DISTANCES if d < longest):
        cells = [_cell(curve, distance) for curve, _ in curves.values()]
        print(f"{distance:>8}" + "".join(f"  {cell:>{width}}" for cell in cells))


def _cell(curve: Tensor, distance: int) -> str:
    return f"{curve[distance].item():.3e}" if distance < len(curve) else "-"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[seq2seq] %(message)s")
    try:
        curves = diagnose_gradients(args)
    except UserError as err:
        exit_on_user_error(err)
    print_table(curves)
    print(f"wrote {Path(args.output) / 'gradients.csv'} and {Path(args.output) / 'gradients.png'}")
