"""A lexical shortlist: the target pieces each sentence may be translated into.

As Marian's `--shortlist` and Sockeye's `--restrict-lexicon`: an IBM Model 1 table,
trained on the parallel corpus, gives each source piece its K likeliest target pieces;
a sentence may use those of its own pieces and the N most frequent target pieces.

Shapes: B batch, S source length, K candidates per source piece, N always-allowed ids,
I co-occurrence instances (source position incl. NULL x target position, over all
pairs), P distinct co-occurring (source, target) id pairs, V vocabulary size.
"""

import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from seq2seq.errors import UserError, first_line
from seq2seq.textfiles import atomic_binary_output
from seq2seq.tokenizer import EOS_ID, UNK_ID

FORMAT, VERSION = "seq2seq-shortlist", 1
ALWAYS = (UNK_ID, EOS_ID)  # EOS ends every output but is in no encoded sentence; UNK as Marian


@dataclass(frozen=True, eq=False)
class Shortlist:
    """Per-source-piece target candidates and the target ids every sentence may use."""

    candidates: Tensor  # (V_src, K) int64 target ids, best first; -1 where fewer are known
    frequent: Tensor  # (N,) int64 target ids always allowed (UNK, EOS, then the most frequent)
    fingerprint: str  # `Tokenizer.fingerprint` of the models it was built with
    tgt_vocab_size: int

    def allowed(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        """(B, S) padded source ids, (B,) lengths -> (B, V_tgt) bool: the `frequent` ids and
        the candidates of each sentence's real source pieces. A row depends on its sentence
        only."""
        batch, length = src.shape
        candidates = self.candidates.to(src.device)[src]  # (B, S, K)
        real = torch.arange(length, device=src.device) < src_lengths.unsqueeze(1)  # (B, S)
        keep = real.unsqueeze(2) & (candidates >= 0)  # (B, S, K)
        dummy = self.tgt_vocab_size  # an extra column that takes what is not kept
        index = candidates.masked_fill(~keep, dummy).view(batch, -1)  # (B, S*K)
        mask = torch.zeros(batch, dummy + 1, dtype=torch.bool, device=src.device)
        mask.scatter_(1, index, True)
        mask[:, self.frequent.to(src.device)] = True
        return mask[:, :dummy]  # (B, V_tgt)

    def save(self, path: str) -> None:
        """Write atomically as a plain dict that `load` reads with `weights_only=True`."""
        state = {
            "format": FORMAT,
            "version": VERSION,
            "candidates": self.candidates,
            "frequent": self.frequent,
            "fingerprint": self.fingerprint,
            "tgt_vocab_size": self.tgt_vocab_size,
        }
        with atomic_binary_output(path) as out:
            torch.save(state, out)

    @classmethod
    def load(cls, path: str | Path) -> "Shortlist":
        """Read what `save` wrote; UserError naming `path` for anything else."""
        state = _read_state(Path(path))
        if state.get("version") != VERSION:
            raise UserError(
                f"{path}: shortlist format version {state.get('version')}, this seq2seq "
                f"reads {VERSION}: rebuild it with scripts/shortlist.py"
            )
        return cls(
            state["candidates"], state["frequent"], state["fingerprint"], state["tgt_vocab_size"]
        )

    def check_matches(self, fingerprint: str, tgt_vocab_size: int, origin: str) -> None:
        """UserError naming `origin` (the shortlist file) unless it was built with the
        SentencePiece models of `fingerprint`."""
        if (self.fingerprint, self.tgt_vocab_size) != (fingerprint, tgt_vocab_size):
            raise UserError(
                f"{origin} was built for SentencePiece model(s) {self.fingerprint} "
                f"({self.tgt_vocab_size} target pieces), the checkpoint has {fingerprint} "
                f"({tgt_vocab_size}): rebuild it with scripts/shortlist.py --checkpoint"
            )


def _read_state(path: Path) -> dict:
    """The dict of a shortlist file, its format tag checked."""
    if not path.is_file():
        raise UserError(f"shortlist not found: {path}")
    not_one = f"{path}: not a shortlist file (write one with scripts/shortlist.py)"
    if not zipfile.is_zipfile(path):
        raise UserError(not_one)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise UserError(f"{not_one}: {first_line(err)}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(not_one)
    return state


def build_shortlist(
    src_ids: list[list[int]],
    tgt_ids: list[list[int]],
    src_vocab_size: int,
    tgt_vocab_size: int,
    *,
    k: int,
    n: int,
    iterations: int = 5,
    fingerprint: str,
    always: Sequence[int] = ALWAYS,
    progress: bool = False,
) -> Shortlist:
    """The shortlist of a tokenized parallel corpus: each source piece's `k` likeliest
    target pieces by IBM Model 1 (`ibm1_table`; ties: the lower id), and as `frequent`
    the `always` ids then the `n` most frequent other target ids of the corpus (ties: the
    lower id)."""
    for name, value, least in (("k", k, 1), ("n", n, 0), ("iterations", iterations, 1)):
        if value < least:
            raise UserError(f"shortlist {name} must be at least {least}, got {value}")
    src, tgt, prob = ibm1_table(
        src_ids, tgt_ids, src_vocab_size, tgt_vocab_size, iterations=iterations, progress=progress
    )
    return Shortlist(
        _top_candidates(src, tgt, prob, src_vocab_size, k),
        _frequent(tgt_ids, tgt_vocab_size, n, always),
        fingerprint,
        tgt_vocab_size,
    )


def ibm1_table(
    src_ids: list[list[int]],
    tgt_ids: list[list[int]],
    src_vocab_size: int,
    tgt_vocab_size: int,
    *,
    iterations: int,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """IBM Model 1 (Brown et al. 1993) by EM: t(e | f) over the co-occurring pairs.

    Each target piece e_j of a pair (f, e) is aligned to one of the source positions
    f_0 = NULL, f_1 .. f_l. From t(e | f) = 1 / V_tgt, each iteration computes

        c(e | f) = sum over pairs, j and i with e_j = e, f_i = f of
                   t(e_j | f_i) / sum_{i'=0..l} t(e_j | f_i')          (E step)
        t(e | f) = c(e | f) / sum_e' c(e' | f)                          (M step)

    -> (P,) source ids (NULL: `src_vocab_size`), (P,) target ids, (P,) float64 t(e | f),
    sorted by (source, target); pairs that never co-occur have t = 0 and are left out.
    """
    src, tgt, token = _cooccurrences(src_ids, tgt_ids, null_id=src_vocab_size)  # (I,) each
    keys, pair = torch.unique(src * tgt_vocab_size + tgt, return_inverse=True)  # (P,), (I,)
    del src, tgt
    pair_src = keys // tgt_vocab_size  # (P,)
    prob = torch.full(keys.shape, 1.0 / tgt_vocab_size, dtype=torch.float64)  # (P,)
    for _ in tqdm(range(iterations), desc="IBM Model 1", unit="iter", disable=not progress):
        prob = _em_step(prob, pair, token, pair_src, sum(map(len, tgt_ids)), src_vocab_size + 1)
    return pair_src, keys % tgt_vocab_size, prob


def _cooccurrences(
    src_ids: list[list[int]], tgt_ids: list[list[int]], null_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Every (source position, with NULL first, x target position) of each pair ->
    (I,) source ids, (I,) target ids, (I,) index of the target token in the corpus."""
    sources = [[null_id, *ids] for ids in src_ids]
    src_flat = torch.tensor(list(chain.from_iterable(sources)), dtype=torch.long)
    tgt_flat = torch.tensor(list(chain.from_iterable(tgt_ids)), dtype=torch.long)  # (L,)
    src_lens = torch.tensor([len(ids) for ids in sources], dtype=torch.long)  # (pairs,)
    tgt_lens = torch.tensor([len(ids) for ids in tgt_ids], dtype=torch.long)  # (pairs,)
    fan = src_lens.repeat_interleave(tgt_lens)  # (L,) source positions of each target token
    src_start = (src_lens.cumsum(0) - src_lens).repeat_interleave(tgt_lens)  # (L,)
    shift = src_start - (fan.cumsum(0) - fan)  # (L,) instance number -> source position
    token = torch.arange(len(tgt_flat)).repeat_interleave(fan)  # (I,)
    position = torch.arange(len(token)) + shift[token]  # (I,)
    return src_flat[position], tgt_flat[token], token


def _em_step(
    prob: Tensor, pair: Tensor, token: Tensor, pair_src: Tensor, tokens: int, sources: int
) -> Tensor:
    """One EM iteration: (P,) t(e | f) -> (P,) the next, over (I,) instances that index
    their pair and their target token (of `tokens`); `sources` ids, NULL included."""
    weight = prob[pair]  # (I,)
    norm = torch.zeros(tokens, dtype=prob.dtype).index_add_(0, token, weight)  # (L,)
    counts = torch.zeros_like(prob).index_add_(0, pair, weight / norm[token])  # (P,)
    totals = torch.zeros(sources, dtype=prob.dtype).index_add_(0, pair_src, counts)
    return counts / totals[pair_src]


def _top_candidates(src: Tensor, tgt: Tensor, prob: Tensor, src_vocab_size: int, k: int) -> Tensor:
    """(V_src, k) the likeliest target ids of each source id, -1 past those known."""
    order = torch.sort(-prob, stable=True).indices  # ties keep the (source, target) order
    order = order[torch.sort(src[order], stable=True).indices]  # by source, then prob
    src, tgt = src[order], tgt[order]  # (P,)
    per_source = torch.bincount(src, minlength=src_vocab_size + 1)  # (V_src + 1,) NULL last
    rank = torch.arange(len(src)) - (per_source.cumsum(0) - per_source)[src]  # (P,)
    keep = (rank < k) & (src < src_vocab_size)
    candidates = torch.full((src_vocab_size, k), -1, dtype=torch.long)
    candidates[src[keep], rank[keep]] = tgt[keep]
    return candidates


def _frequent(
    tgt_ids: list[list[int]], tgt_vocab_size: int, n: int, always: Sequence[int]
) -> Tensor:
    """(len(always) + up to n,) `always`, then the `n` most frequent other ids of the corpus."""
    flat = torch.tensor(list(chain.from_iterable(tgt_ids)), dtype=torch.long)
    counts = torch.bincount(flat, minlength=tgt_vocab_size)  # (V_tgt,)
    counts[list(always)] = 0
    ranked = torch.sort(counts, descending=True, stable=True).indices  # ties: the lower id
    top = ranked[:n][counts[ranked[:n]] > 0]
    return torch.cat([torch.tensor(always, dtype=torch.long), top])
