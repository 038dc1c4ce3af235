"""Bahdanau attention against a per-position loop written from the formula."""

import torch

from seq2seq.attention import BahdanauAttention


def test_matches_the_formula_and_masks_padding() -> None:
    attention = BahdanauAttention(query_size=5, memory_size=6, attention_size=4)
    query, values = torch.randn(2, 5), torch.randn(2, 3, 6)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    context, weights = attention(query, attention.project_keys(values), values, mask)

    w_q, b_q = attention.query_proj.weight, attention.query_proj.bias
    w_k, v = attention.key_proj.weight, attention.energy.weight.squeeze(0)
    for b in range(2):
        n = int(mask[b].sum())
        scores = torch.stack(
            [v @ torch.tanh(w_q @ query[b] + b_q + w_k @ values[b, j]) for j in range(n)]
        )
        expected = torch.softmax(scores, dim=0)
        torch.testing.assert_close(weights[b, :n], expected)
        torch.testing.assert_close(context[b], expected @ values[b, :n])
    assert weights[1, 2] == 0
