"""Scoring given translations: how probable a model finds each target given its source,
and where its attention goes when forced to output it (word alignments).

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
from seq2seq.errors import UserError
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
    alignment: list[tuple[int, int]] | None = None  # (source word, target word), if asked


SKIPPED = PairScore(math.nan, 0, math.nan)  # a pair with an empty source or target


@torch.inference_mode()
def score_pairs(
    translator: Translator,
    sources: list[str],
    targets: list[str],
    *,
    batch_tokens: int = BATCH_TOKENS,
    first_line: int = 1,
    alignment: bool = False,
) -> list[PairScore]:
    """The score of each (source, target) pair, in input order.

    Sources are read as `translator` decodes them (truncated to its `max_src_len`, with a
    warning). Pairs are batched in length order, `batch_tokens` padded positions at most
    (at least the longest pair): a score does not depend on its batch. A pair whose source
    or target is empty or blank is not scored: it gets SKIPPED, and one warning names
    those lines, numbered from `first_line`. `alignment=True` also aligns each scored
    pair's words (seq2seq.alignment) from the attention of the model (an ensemble's
    first) forced to output the target (`forced_attention`).
    """
    source_ids, target_ids = _encoded_pairs(translator, sources, targets, first_line)
    results = [SKIPPED] * len(sources)
    for rows in _batches(source_ids, target_ids, batch_tokens):
        batch_sources, batch_targets = [source_ids[r] for r in rows], [target_ids[r] for r in rows]
        sums = target_log_probs(translator, batch_sources, batch_targets).tolist()
        attention = (
            forced_attention(translator, batch_sources, batch_targets) if alignment else None
        )
        for k, (row, total) in enumerate(zip(rows, sums, strict=True)):
            pieces = len(target_ids[row]) + 1
            aligned = None
            if attention is not None:
                aligned = translator.align_words(sources[row], target_ids[row], attention[k])
            results[row] = PairScore(total, pieces, total / pieces, aligned)
    return results


def _encoded_pairs(
    translator: Translator, sources: list[str], targets: list[str], first_line: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Source and target ids of each pair, as decoding reads them; one warning names the
    pairs with an empty side, which are left out."""
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    source_ids = translator.encode_sources(sources, first_line)
    target_ids = translator.tokenizer.encode_tgt([t.strip() for t in targets])
    pairs = zip(source_ids, target_ids, strict=True)
    skipped = [first_line + i for i, (src, tgt) in enumerate(pairs) if not (src and tgt)]
    if skipped:
        log.warning(
            "%d pair(s) with an empty source or target, not scored (nan, 0 pieces): line(s) %s",
            len(skipped),
            line_numbers(skipped),
        )
    return source_ids, target_ids


def _batches(
    source_ids: list[list[int]], target_ids: list[list[int]], batch_tokens: int
) -> list[list[int]]:
    """The pairs with both sides non-empty, batched in length order, `batch_tokens` padded
    positions at most (at least the longest pair): lists of pair indices."""
    todo = [
        i for i, (src, tgt) in enumerate(zip(source_ids, target_ids, strict=True)) if src and tgt
    ]
    costs = example_cost(
        np.array([len(source_ids[i]) for i in todo], dtype=np.int64),
        np.array([len(target_ids[i]) for i in todo], dtype=np.int64),
    )
    budget = max(batch_tokens, int(costs.max(initial=0)))
    return [[todo[i] for i in batch] for batch in TokenBatchSampler(costs, budget, shuffle=False)]


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


@torch.inference_mode()
def forced_attention(
    translator: Translator, sources: list[list[int]], targets: list[list[int]]
) -> list[np.ndarray]:
    """Each pair's (T, S_i) attention (T: its target pieces and EOS) when the model whose
    attention search reports (an ensemble's first) is forced to output the target:
    `decode_step` fed the target one piece at a time."""
    model = translator.attending_model
    src, src_lengths = translator.pad(sources)  # (B, S), (B,)
    tgt_in, _ = translator.pad([[model.bos_id, *ids] for ids in targets])  # (B, T)
    memory, state = model.encode(src, src_lengths)
    steps = []
    for t in range(tgt_in.size(1)):
        _, state, weights = model.decode_step(memory, state, tgt_in[:, t])  # (B, S)
        if weights is None:
            raise UserError("alignments need a model with attention")
        steps.append(weights.float())
    attention = torch.stack(steps, dim=1).cpu().numpy()  # (B, T, S)
    return [
        attention[i, : len(ids) + 1, :n]
        for i, (ids, n) in enumerate(zip(targets, src_lengths.tolist(), strict=True))
    ]
