"""Attention scores against a per-position loop written from each formula."""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from seq2seq.attention import Attention


def formula(attention: Attention) -> Callable[[Tensor, Tensor], Tensor]:
    """score(q, k) for one query and one encoder state, written out."""
    if attention.score == "additive":
        w_q, b_q = attention.query_proj.weight, attention.query_proj.bias
        w_k, v = attention.key_proj.weight, attention.energy.weight.squeeze(0)
        return lambda q, h: v @ torch.tanh(w_q @ q + b_q + w_k @ h)
    if attention.score == "general":
        return lambda q, h: q @ (attention.key_proj.weight @ h)
    return lambda q, h: q @ h


@pytest.mark.parametrize("score", ["additive", "general", "dot"])
@pytest.mark.parametrize("inference", [False, True], ids=["training", "inference"])
def test_matches_the_formula_and_masks_padding(score: str, inference: bool) -> None:
    memory_size = 5 if score == "dot" else 6
    attention = Attention(score, query_size=5, memory_size=memory_size, attention_size=4)
    query, values = torch.randn(2, 5), torch.randn(2, 3, memory_size)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    with torch.inference_mode(inference):  # inference on CPU computes tanh through sigmoid
        context, weights = attention(query, attention.project_keys(values), values, mask)

    score_of = formula(attention)
    for b in range(2):
        n = int(mask[b].sum())
        scores = torch.stack([score_of(query[b], values[b, j]) for j in range(n)])
        expected = torch.softmax(scores, dim=0)
        torch.testing.assert_close(weights[b, :n], expected.detach())
        torch.testing.assert_close(context[b], (expected @ values[b, :n]).detach())
    assert weights[1, 2] == 0


@pytest.mark.parametrize("score", ["additive", "general", "dot"])
@torch.inference_mode()
def test_k_queries_per_sentence_equal_the_memory_repeated_k_times(score: str) -> None:
    memory_size = 5 if score == "dot" else 6
    attention = Attention(score, query_size=5, memory_size=memory_size, attention_size=4)
    beams, values = 3, torch.randn(2, 4, memory_size)
    query = torch.randn(2 * beams, 5)  # rows 0-2 read sentence 0, rows 3-5 sentence 1
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    context, weights = attention(query, attention.project_keys(values), values, mask)

    repeated = values.repeat_interleave(beams, dim=0)  # (6, 4, D)
    expected = attention(
        query, attention.project_keys(repeated), repeated, mask.repeat_interleave(beams, dim=0)
    )
    torch.testing.assert_close(context, expected[0])
    torch.testing.assert_close(weights, expected[1])
