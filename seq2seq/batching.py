"""Batches by token count: a length-bucketing batch sampler and the collate function.

Padding convention: the source is fed as is (no BOS, no EOS); the target is
shifted, `tgt_in` = BOS + ids and `tgt_out` = ids + EOS. An example therefore
costs `max(len(src_ids), len(tgt_ids) + 1)` padded positions per row, which is
the length the sampler must be given (see `example_cost`).
"""

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

log = logging.getLogger(__name__)


def example_cost(src_len: np.ndarray, tgt_len: np.ndarray) -> np.ndarray:
    """The padded length of each example as `collate` lays it out."""
    return np.maximum(src_len, tgt_len + 1)


def _greedy_batches(order: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Cut `order` (indices sorted by ascending length) into consecutive batches.

    Each batch takes as many examples as fit `size * longest <= max_tokens`;
    `lengths` holds the lengths of `order`'s examples, in the same order.
    """
    batches = []
    start = 0
    while start < len(order):
        # Sorted ascending, so no batch from `start` can hold more than this many.
        window = lengths[start : start + max_tokens // max(int(lengths[start]), 1)]
        costs = np.arange(1, len(window) + 1) * window  # nondecreasing
        size = int(np.searchsorted(costs, max_tokens, side="right"))  # >= 1: validated
        batches.append(order[start : start + size])
        start += size
    return batches


def _indices(index: np.ndarray) -> np.ndarray:
    """Example indices as int32 where they fit: the epoch's order of a 10M-pair corpus
    then holds 40 MB, not 80."""
    return index.astype(np.int32) if len(index) < 2**31 else index


class TokenBatchSampler(Sampler[list[int]]):
    """Yields lists of example indices whose padded size stays within `max_tokens`.

    shuffle=True: each epoch sorts all examples by length, ties in a random order
    seeded by `(seed, epoch)`, cuts them into batches and shuffles the order of
    the batches. The batches' lengths, hence their number, are the same every
    epoch (Lightning counts them once); which examples share a batch varies.
    shuffle=False: sorts by length, ties by index, the same every time.

    Distributed (`num_replicas` > 1): every rank computes the same batch list and
    takes every `num_replicas`-th batch from `rank`, so each example goes to one
    rank. When shuffling (training), the list is first padded by repeating its first
    batches so that every rank gets the same number of batches (DDP's gradient
    all-reduce needs that); evaluation shards are not padded, so no example is
    scored twice, and may differ by one batch.

    Resuming mid-epoch: `resume(epoch, batches_done)` makes the next pass over
    that epoch skip the batches already trained on.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        """`lengths[i]` is the padded length of example i (see `example_cost`)."""
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = np.asarray(lengths, dtype=np.int32)  # (N,) half of int64's memory
        longest = int(self.lengths.max(initial=0))
        if longest > max_tokens:
            raise ValueError(f"an example of length {longest} exceeds max_tokens={max_tokens}")
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._batches: list[np.ndarray] | None = None  # the current epoch's, once computed
        self._skip = 0  # batches of this epoch the next pass skips, see `resume`

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order `__iter__` yields."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = None
            self._skip = 0

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue `epoch` after its first `batches_done` batches (this rank's), on next pass."""
        self.set_epoch(epoch)
        self._skip = batches_done

    @property
    def sampler(self) -> "TokenBatchSampler":
        """Itself: Lightning calls `set_epoch` on `batch_sampler.sampler`, not `batch_sampler`."""
        return self

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        for batch in self._epoch_batches()[skip:]:
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self._epoch_batches())

    def _epoch_batches(self) -> list[np.ndarray]:
        """The current epoch's batches, computed once."""
        if self._batches is None:
            batches = self._shuffled() if self.shuffle else self._sorted()
            self._batches = shard(batches, self.num_replicas, self.rank, pad=self.shuffle)
        return self._batches

    def _sorted(self) -> list[np.ndarray]:
        order = _indices(np.argsort(self.lengths, kind="stable"))
        return _greedy_batches(order, self.lengths[order], self.max_tokens)

    def _shuffled(self) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        permutation = _indices(rng.permutation(len(self.lengths)))
        order = permutation[np.argsort(self.lengths[permutation], kind="stable")]
        batches = _greedy_batches(order, self.lengths[order], self.max_tokens)
        return [batches[i] for i in rng.permutation(len(batches))]


class ResumableLoader(DataLoader):
    """A DataLoader over a `TokenBatchSampler` whose place in the epoch Lightning checkpoints.

    Lightning saves `state_dict()` in every checkpoint and, resuming mid-epoch,
    hands it to `load_state_dict`, which makes the sampler skip the batches
    already trained on. `batches_done` reports how many that is: the loader
    cannot count them itself, since Lightning fetches batches ahead.
    `restart_epoch` makes Lightning count the epoch's batches from 0 again.
    """

    def __init__(
        self,
        *args: Any,
        batches_done: Callable[[], int],
        restart_epoch: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, TokenBatchSampler):
            raise TypeError("ResumableLoader needs batch_sampler=TokenBatchSampler(...)")
        self.batches_done = batches_done
        self.restart_epoch = restart_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.batch_sampler.epoch,
            "batches_done": self.batches_done(),
            "batching": self._batching(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Skip the batches done. Under another batching the epoch's batches are others,
        so the epoch restarts from its beginning in the new order, with a warning."""
        saved = state.get("batching", self._batching())
        batches_done = state["batches_done"]
        if saved != self._batching() and batches_done:
            log.warning(
                "the batching changed since the checkpoint (was %s, now %s): epoch %d "
                "restarts from its beginning with the new batching",
                saved,
                self._batching(),
                state["epoch"],
            )
            self.restart_epoch()
            batches_done = 0
        self.batch_sampler.resume(state["epoch"], batches_done)

    def _batching(self) -> dict[str, int]:
        """What decides this process's batches of an epoch."""
        sampler = self.batch_sampler
        settings = {"examples": len(sampler.lengths), "max_tokens": sampler.max_tokens}
        return settings | {"seed": sampler.seed, "processes": sampler.num_replicas}


def shard(
    batches: list[np.ndarray], num_replicas: int, rank: int, *, pad: bool
) -> list[np.ndarray]:
    """Rank `rank`'s share of `batches`: every `num_replicas`-th from `rank`.

    With `pad`, the first batches are repeated (cyclically) until the count divides
    evenly, so that all ranks get the same number.
    """
    if pad and batches:
        short = -len(batches) % num_replicas
        batches = batches + [batches[i % len(batches)] for i in range(short)]
    return batches[rank::num_replicas]


def _pad(rows: list[list[int]], pad_id: int, min_width: int = 0) -> torch.Tensor:
    """Right-pad `rows` with `pad_id` into a (len(rows), width) long tensor."""
    width = max([min_width, *map(len, rows)])
    return torch.tensor([[*row, *[pad_id] * (width - len(row))] for row in rows], dtype=torch.long)


def collate(
    examples: list[dict],
    *,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    max_src_len: int | None = None,
) -> dict[str, Any]:
    """Pad a list of examples into a batch, sources cut to `max_src_len` tokens if given
    (what `Translator` does to sources longer than any trained on).

    Each example has `src_ids`, `tgt_ids` (lists of ints, no BOS/EOS), `index`
    and optionally `src_text`, `tgt_text`. Returns tensors `src` (B, S),
    `src_lengths` (B,), `tgt_in` (B, T) = BOS + ids, `tgt_out` (B, T) = ids +
    EOS, `tgt_lengths` (B,) = len(ids) + 1, `index` (B,); plus the texts as
    lists of str where the examples have them. S is at least 1 even when every
    source is empty, whose `src_lengths` are then 0.
    """
    src = [ex["src_ids"][:max_src_len] for ex in examples]
    tgt = [ex["tgt_ids"] for ex in examples]
    batch: dict[str, Any] = {
        "src": _pad(src, pad_id, min_width=1),
        "src_lengths": torch.tensor([len(s) for s in src], dtype=torch.long),
        "tgt_in": _pad([[bos_id, *t] for t in tgt], pad_id),
        "tgt_out": _pad([[*t, eos_id] for t in tgt], pad_id),
        "tgt_lengths": torch.tensor([len(t) + 1 for t in tgt], dtype=torch.long),
        "index": torch.tensor([ex["index"] for ex in examples], dtype=torch.long),
    }
    for key in ("src_text", "tgt_text"):
        if key in examples[0]:
            batch[key] = [ex[key] for ex in examples]
    return batch
