"""`scripts/shortlist.py`: build a lexical shortlist (IBM Model 1) for a checkpoint's vocabularies.

Reads the parallel training text (plain or .gz), tokenizes it with the checkpoint's
SentencePiece models, and writes each source piece's K likeliest target pieces and the
N most frequent target pieces to `--output`.
"""

import argparse
import logging
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from seq2seq.checkpoint import load_checkpoint
from seq2seq.corpus import read_parallel
from seq2seq.errors import ArgumentParser, UserError, exit_on_user_error
from seq2seq.shortlist import Shortlist, build_shortlist
from seq2seq.tokenizer import PAD_ID, Tokenizer

log = logging.getLogger(__name__)

K, N, ITERATIONS = 50, 100, 5
BATCH = 1024  # sentences whose (B, V_tgt) masks are counted at once


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n", 1)[0].split(":", 1)[1].strip())
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by scripts/train.py")
    parser.add_argument("--src", required=True, help="source side of the corpus (.gz too)")
    parser.add_argument("--tgt", required=True, help="its target side, line by line")
    parser.add_argument("--output", required=True, help="the shortlist file to write")
    parser.add_argument(
        "-k", type=int, default=K, help=f"candidates kept per source piece (default {K})"
    )
    parser.add_argument(
        "-n", type=int, default=N, help=f"most frequent target pieces always allowed (default {N})"
    )
    parser.add_argument(
        "--iterations", type=int, default=ITERATIONS, help=f"EM iterations (default {ITERATIONS})"
    )
    parser.add_argument("--progress", action="store_true", help="a progress bar over iterations")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[seq2seq] %(message)s")
    try:
        tokenizer = checkpoint_tokenizer(args.checkpoint)
        pairs = list(read_parallel(Path(args.src), Path(args.tgt)))
        sources = tokenizer.encode_src([src.strip() for src, _ in pairs])
        targets = tokenizer.encode_tgt([tgt.strip() for _, tgt in pairs])
        shortlist = build_shortlist(
            sources,
            targets,
            tokenizer.src_vocab_size,
            tokenizer.tgt_vocab_size,
            k=args.k,
            n=args.n,
            iterations=args.iterations,
            fingerprint=tokenizer.fingerprint,
            progress=args.progress,
        )
        shortlist.save(args.output)
    except UserError as err:
        exit_on_user_error(err)
    covered = int((shortlist.candidates[:, 0] >= 0).sum())
    log.info(
        "wrote %s: candidates for %d of %d source pieces (K=%d), %d always allowed; "
        "a corpus sentence allows %.0f of %d target pieces on average",
        args.output,
        covered,
        tokenizer.src_vocab_size,
        args.k,
        len(shortlist.frequent),
        mean_allowed(shortlist, sources),
        tokenizer.tgt_vocab_size,
    )


def checkpoint_tokenizer(path: str) -> Tokenizer:
    """The SentencePiece models of a checkpoint (its weights are mapped, not read)."""
    checkpoint = load_checkpoint(path, mmap=True)
    try:
        return Tokenizer.from_dict(checkpoint["tokenizer"])
    except UserError as err:
        raise UserError(f"{path}: {err}") from err


def mean_allowed(shortlist: Shortlist, sources: list[list[int]]) -> float:
    """The mean number of target ids `shortlist` allows a sentence of `sources`."""
    total = 0
    for start in range(0, len(sources), BATCH):
        batch = [torch.tensor(ids, dtype=torch.long) for ids in sources[start : start + BATCH]]
        src = pad_sequence(batch, batch_first=True, padding_value=PAD_ID)  # (B, S)
        lengths = torch.tensor([len(ids) for ids in batch])  # (B,)
        total += int(shortlist.allowed(src, lengths).sum())
    return total / max(len(sources), 1)
