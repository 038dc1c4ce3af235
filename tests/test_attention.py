"""Bahdanau attention against a per-position loop written from the formula."""

import pytest
import torch

from seq2seq.attention import BahdanauAttention


@pytest.mark.parametrize("inference", [False, True], ids=["training", "inference"])
def test_matches_the_formula_and_masks_padding(inference: bool) -> None:
    attention = BahdanauAttention(query_size=5, memory_size=6, attention_size=4)
    query, values = torch.randn(2, 5), torch.randn(2, 3, 6)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    with torch.inference_mode(inference):  # inference on CPU computes tanh through sigmoid
        context, weights = attention(query, attention.project_keys(values), values, mask)

    w_q, b_q = attention.query_proj.weight, attention.query_proj.bias
    w_k, v = attention.key_proj.weight, attention.energy.weight.squeeze(0)
    for b in range(2):
        n = int(mask[b].sum())
        scores = torch.stack(
            [v @ torch.tanh(w_q @ query[b] + b_q + w_k @ values[b, j]) for j in range(n)]
        )
        expected = torch.softmax(scores, dim=0)
        torch.testing.assert_close(weights[b, :n], expected.detach())
        torch.testing.assert_close(context[b], (expected @ values[b, :n]).detach())
    assert weights[1, 2] == 0


@torch.inference_mode()
def test_k_queries_per_sentence_equal_the_memory_repeated_k_times() -> None:
    attention = BahdanauAttention(query_size=5, memory_size=6, attention_size=4)
    beams, values = 3, torch.randn(2, 4, 6)
    query = torch.randn(2 * beams, 5)  # rows 0-2 read sentence 0, rows 3-5 sentence 1
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    context, weights = attention(query, attention.project_keys(values), values, mask)

    repeated = values.repeat_interleave(beams, dim=0)  # (6, 4, 6)
    expected = attention(
        query, attention.project_keys(repeated), repeated, mask.repeat_interleave(beams, dim=0)
    )
    torch.testing.assert_close(context, expected[0])
    torch.testing.assert_close(weights, expected[1])
