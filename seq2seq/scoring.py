"""Scoring given translations: how probable a model finds each target given its source.

What JoeyNMT's `return_prob: ref`, fairseq's `--score-reference` and `marian-scorer`
compute: teacher-forced, the sum of the log-probabilities of the target's pieces and EOS,
without label smoothing or length penalty. For an output of search that ended, it is the
`log_prob` search reported: the same model outputs (an ensemble's combined by its rule).

Shapes: B batch, S source length, T target pieces + 1 (BOS in, EOS out), F decoder output
size, N target pieces of the batch (EOS included), V target vocabulary.
"""

import logging
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from seq2seq.batching import TokenBatchSampler, example_cost
from seq2seq.encoder import length_mask
from seq2seq.textfiles import line_numbers
from seq2seq.translator import Translator

log = logging.getLogger(__name__)

# Padded positions per batch (the longer of source and target + 1, as training counts
# them), training's default data.max_tokens.
BATCH_TOKENS = 4096
# Target pieces whose (rows, V) log-probabilities are computed at once: a batch never
# holds all (N, V) of them.
ROWS = 1024


class PairScore(NamedTuple):
    """The score of one (source, target) pair."""

    log_prob: float  # sum of the log-probabilities of the target pieces and EOS
    pieces: int  # target pieces + EOS
    per_piece: float  # log_prob / pieces


SKIPPED = PairScore(math.nan, 0, math.nan)  # a pair with an empty source or target


@torch.inference_mode()
def score_pairs(
    translator: Translator,
    sources: list[str],
    targets: list[str],
    *,
    batch_tokens: int = BATCH_TOKENS,
    first_line: int = 1,
) -> list[PairScore]:
    """The score of each (source, target) pair, in input order.

    Sources are read as `translator` decodes them (truncated to its `max_src_len`, with a
    warning). Pairs are batched in length order, `batch_tokens` padded positions at most
    (at least the longest pair): a score does not depend on its batch. A pair whose source
    or target is empty or blank is not scored: it gets SKIPPED, and one warning names
    those lines, numbered from `first_line`.
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    source_ids = translator.encode_sources(sources, first_line)
    target_ids = translator.tokenizer.encode_tgt([t.strip() for t in targets])
    pairs = list(zip(source_ids, target_ids, strict=True))
    todo = [i for i, (src, tgt) in enumerate(pairs) if src and tgt]
    skipped = [first_line + i for i, (src, tgt) in enumerate(pairs) if not (src and tgt)]
    if skipped:
        log.warning(
            "%d pair(s) with an empty source or target, not scored (nan, 0 pieces): line(s) %s",
            len(skipped),
            line_numbers(skipped),
        )
    costs = example_cost(
        np.array([len(source_ids[i]) for i in todo], dtype=np.int64),
        np.array([len(target_ids[i]) for i in todo], dtype=np.int64),
    )
    budget = max(batch_tokens, int(costs.max(initial=0)))
    results = [SKIPPED] * len(pairs)
    for batch in TokenBatchSampler(costs, budget, shuffle=False):
        rows = [todo[i] for i in batch]
        sums = target_log_probs(
            translator, [source_ids[r] for r in rows], [target_ids[r] for r in rows]
        )
        for row, total in zip(rows, sums.tolist(), strict=True):
            pieces = len(target_ids[row]) + 1
            results[row] = PairScore(total, pieces, total / pieces)
    return results


def target_log_probs(
    translator: Translator, sources: list[list[int]], targets: list[list[int]]
) -> Tensor:
    """(B,) float64: the summed log-probabilities of each target's ids and EOS given its
    source's ids (neither empty), teacher-forced through `translator`'s model."""
    model = translator.model
    src, src_lengths = translator.pad(sources)  # (B, S), (B,)
    tgt_in, _ = translator.pad([[model.bos_id, *ids] for ids in targets])  # (B, T)
    tgt_out, tgt_lengths = translator.pad([[*ids, model.eos_id] for ids in targets])  # (B, T)
    outputs = model.features(src, src_lengths, tgt_in)  # (B, T, F)
    real = length_mask(tgt_lengths, tgt_out.size(1))  # (B, T)
    hidden, ids = outputs[real], tgt_out[real]  # (N, F), (N,)
    picked = [
        model.log_probs(rows).gather(1, next_ids.unsqueeze(1)).squeeze(1)  # (ROWS, V) -> (ROWS,)
        for rows, next_ids in zip(hidden.split(ROWS), ids.split(ROWS), strict=True)
    ]
    per_piece = torch.zeros(real.shape, dtype=torch.float64, device=real.device)  # (B, T)
    per_piece[real] = torch.cat(picked).double()
    return per_piece.sum(dim=1)
