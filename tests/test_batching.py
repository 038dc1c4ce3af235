"""Token batch sampler and collate."""

import itertools
import logging
import pickle
from collections import Counter
from functools import partial

import numpy as np
import pytest
import torch

from seq2seq.batching import ResumableLoader, TokenBatchSampler, collate, example_cost

MAX_TOKENS = 200


@pytest.fixture
def lengths() -> np.ndarray:
    return np.random.default_rng(0).integers(1, 60, size=1000)


def epoch_batches(sampler: TokenBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("shuffle", [True, False])
def test_each_example_once_and_within_budget(lengths: np.ndarray, shuffle: bool) -> None:
    sampler = TokenBatchSampler(lengths, MAX_TOKENS, shuffle=shuffle)
    for epoch in range(2):
        batches = epoch_batches(sampler, epoch)
        assert len(sampler) == len(batches)
        assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
        assert all(len(b) * lengths[b].max() <= MAX_TOKENS for b in batches)
        # Far fewer batches than examples: batches are filled, not singletons.
        assert len(batches) < len(lengths) / 4


def test_same_seed_and_epoch_give_same_batches(lengths: np.ndarray) -> None:
    first = TokenBatchSampler(lengths, MAX_TOKENS, seed=3)
    second = TokenBatchSampler(lengths.tolist(), MAX_TOKENS, seed=3)
    assert epoch_batches(first, 4) == epoch_batches(second, 4)
    assert epoch_batches(first, 4) != epoch_batches(first, 5)
    other_seed = TokenBatchSampler(lengths, MAX_TOKENS, seed=4)
    assert epoch_batches(other_seed, 4) != epoch_batches(first, 4)


def test_epochs_have_the_same_batch_count_but_new_batches(lengths: np.ndarray) -> None:
    sampler = TokenBatchSampler(lengths, MAX_TOKENS, seed=3)
    epochs = [epoch_batches(sampler, epoch) for epoch in range(4)]
    assert len({len(batches) for batches in epochs}) == 1  # Lightning counts batches once
    compositions = [{frozenset(batch) for batch in batches} for batches in epochs]
    assert compositions[0] != compositions[1]  # ties in length are broken anew


def test_resume_skips_the_batches_done_in_that_epoch_only(lengths: np.ndarray) -> None:
    whole = epoch_batches(TokenBatchSampler(lengths, MAX_TOKENS, seed=3), 2)
    sampler = TokenBatchSampler(lengths, MAX_TOKENS, seed=3)
    sampler.resume(epoch=2, batches_done=5)
    assert list(sampler) == whole[5:]
    assert list(sampler) == whole  # only once
    sampler.resume(epoch=2, batches_done=len(whole))
    assert epoch_batches(sampler, 3) == epoch_batches(
        TokenBatchSampler(lengths, MAX_TOKENS, seed=3), 3
    )


@pytest.mark.parametrize(
    ("change", "restarted"),
    [({}, False), ({"max_tokens": 300}, True), ({"seed": 4}, True), ({"num_replicas": 2}, True)],
)
def test_resumed_loader_skips_only_under_the_same_batching(
    lengths: np.ndarray, change: dict, restarted: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint's count of batches done is skipped under the same batching; under
    another, the epoch restarts from its beginning (Lightning told so), with a warning."""
    restarts = []

    def loader(**settings) -> ResumableLoader:
        options = {"max_tokens": MAX_TOKENS, "seed": 3} | settings
        sampler = TokenBatchSampler(lengths, **options)
        progress = {"batches_done": lambda: 5, "restart_epoch": lambda: restarts.append(True)}
        return ResumableLoader(lengths.tolist(), batch_sampler=sampler, **progress)

    saved = loader()
    saved.batch_sampler.set_epoch(2)
    resumed = loader(**change)
    with caplog.at_level(logging.WARNING, "seq2seq"):
        resumed.load_state_dict(saved.state_dict())
    whole = epoch_batches(
        TokenBatchSampler(lengths, **({"max_tokens": MAX_TOKENS, "seed": 3} | change)), 2
    )
    assert list(resumed.batch_sampler) == (whole if restarted else whole[5:])
    assert bool(restarts) == restarted
    warning = "epoch 2 restarts from its beginning with the new batching"
    assert (warning in caplog.text) == restarted


def test_shuffled_batches_group_similar_lengths(lengths: np.ndarray) -> None:
    sampler = TokenBatchSampler(lengths, MAX_TOKENS)
    padded = sum(len(b) * lengths[b].max() for b in sampler)
    assert padded < 1.1 * lengths.sum()


def test_unshuffled_is_sorted_and_greedy(lengths: np.ndarray) -> None:
    sampler = TokenBatchSampler(lengths, MAX_TOKENS, shuffle=False)
    batches = epoch_batches(sampler, 0)
    assert epoch_batches(sampler, 7) == batches
    order = [i for batch in batches for i in batch]
    assert np.all(np.diff(lengths[order]) >= 0)
    for batch, following in itertools.pairwise(batches):
        # Taking one more example would have broken the budget.
        assert (len(batch) + 1) * lengths[following[0]] > MAX_TOKENS


def test_too_long_example_raises() -> None:
    with pytest.raises(ValueError, match="length 300 exceeds max_tokens=200"):
        TokenBatchSampler([5, 300, 7], 200)


def test_sampler_pickles(lengths: np.ndarray) -> None:
    sampler = TokenBatchSampler(lengths, MAX_TOKENS, seed=1)
    assert list(pickle.loads(pickle.dumps(sampler))) == list(sampler)


def test_example_cost_counts_the_target_shift() -> None:
    assert example_cost(np.array([5, 2, 0]), np.array([3, 4, 0])).tolist() == [5, 5, 1]


EXAMPLES = [
    {"src_ids": [10, 11, 12], "tgt_ids": [20], "index": 7, "src_text": "a", "tgt_text": "x"},
    {"src_ids": [13], "tgt_ids": [21, 22, 23], "index": 3, "src_text": "b", "tgt_text": "y"},
]


def test_collate_pads_and_shifts() -> None:
    batch = collate(EXAMPLES, pad_id=0, bos_id=2, eos_id=3)
    assert batch["src"].tolist() == [[10, 11, 12], [13, 0, 0]]
    assert batch["src_lengths"].tolist() == [3, 1]
    assert batch["tgt_in"].tolist() == [[2, 20, 0, 0], [2, 21, 22, 23]]
    assert batch["tgt_out"].tolist() == [[20, 3, 0, 0], [21, 22, 23, 3]]
    assert batch["tgt_lengths"].tolist() == [2, 4]
    assert batch["index"].tolist() == [7, 3]
    assert batch["src_text"] == ["a", "b"]
    assert batch["tgt_text"] == ["x", "y"]
    for key in ("src", "src_lengths", "tgt_in", "tgt_out", "tgt_lengths", "index"):
        assert batch[key].dtype == torch.long


def test_collate_sizes_fit_example_cost() -> None:
    batch = collate(EXAMPLES, pad_id=0, bos_id=2, eos_id=3)
    costs = example_cost(np.array([3, 1]), np.array([1, 3]))
    assert max(batch["src"].shape[1], batch["tgt_in"].shape[1]) == costs.max()


def test_collate_without_text_and_with_empty_sides() -> None:
    examples = [
        {"src_ids": [], "tgt_ids": [], "index": 0},
        {"src_ids": [], "tgt_ids": [], "index": 1},
    ]
    batch = collate(examples, pad_id=0, bos_id=2, eos_id=3)
    assert "src_text" not in batch and "tgt_text" not in batch
    assert batch["src"].tolist() == [[0], [0]]  # at least one column, all padding
    assert batch["src_lengths"].tolist() == [0, 0]
    assert batch["tgt_in"].tolist() == [[2], [2]]
    assert batch["tgt_out"].tolist() == [[3], [3]]


def test_collate_partial_pickles() -> None:
    collate_fn = pickle.loads(pickle.dumps(partial(collate, pad_id=0, bos_id=2, eos_id=3)))
    assert collate_fn(EXAMPLES)["tgt_in"][0, 0] == 2


@pytest.mark.parametrize("num_replicas", [2, 3])
def test_shards_cover_every_example_once_with_equal_batch_counts(num_replicas: int) -> None:
    lengths = np.random.default_rng(5).integers(1, 40, size=1001)
    samplers = [
        TokenBatchSampler(lengths, 120, seed=3, num_replicas=num_replicas, rank=r)
        for r in range(num_replicas)
    ]
    whole = TokenBatchSampler(lengths, 120, seed=3)
    for epoch in (0, 1):
        for sampler in [*samplers, whole]:
            sampler.set_epoch(epoch)
        shards = [list(sampler) for sampler in samplers]
        assert len({len(shard) for shard in shards}) == 1
        all_batches = list(whole)
        padded = -len(all_batches) % num_replicas
        seen = Counter(i for shard in shards for batch in shard for i in batch)
        repeated = Counter(i for batch in all_batches[:padded] for i in batch)
        assert seen == Counter(range(len(lengths))) + repeated
        assert all(len(b) * lengths[b].max() <= 120 for shard in shards for b in shard)
    epoch_one = list(samplers[0])
    samplers[0].set_epoch(0)
    assert list(samplers[0]) != epoch_one
    again = TokenBatchSampler(lengths, 120, seed=3, num_replicas=num_replicas)
    assert list(again) == list(samplers[0])  # a new run, same seed and epoch: same batches


def test_evaluation_shards_are_disjoint_and_not_padded() -> None:
    lengths = np.arange(1, 52)
    shards = [
        list(TokenBatchSampler(lengths, 60, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    indices = [i for shard in shards for batch in shard for i in batch]
    assert sorted(indices) == list(range(len(lengths)))
    assert abs(len(shards[0]) - len(shards[1])) <= 1


def test_rank_must_be_below_world_size() -> None:
    with pytest.raises(ValueError, match="rank"):
        TokenBatchSampler([3, 4], 10, num_replicas=2, rank=2)
