"""The encoder's CPU path (one layer and direction at a time over padded tensors) against
PyTorch's packed-sequence RNN, which the CUDA path uses."""

import pytest
import torch

from seq2seq.encoder import Encoder


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, True), (2, True), (2, False)])
def test_unpacked_equals_packed_with_gradients(cell: str, layers: int, bidirectional: bool) -> None:
    torch.manual_seed(0)
    encoder = Encoder(
        11, 6, 5, num_layers=layers, cell=cell, bidirectional=bidirectional, dropout=0.0, pad_id=0
    )
    lengths = torch.tensor([4, 7, 1, 7, 3])
    src = torch.randint(1, 11, (5, 7)).masked_fill(torch.arange(7) >= lengths.unsqueeze(1), 0)
    embedded = encoder.embed(src)
    weights = torch.randn(5, 7, encoder.output_size), torch.randn(5, encoder.output_size)

    results = []
    for run in (encoder._unpacked, encoder._packed):
        inputs = embedded.detach().requires_grad_()
        states, summary = run(inputs, lengths)
        (states * weights[0]).sum().backward(retain_graph=True)
        (summary * weights[1]).sum().backward()
        results.append((states, summary, inputs.grad, encoder.rnn.weight_hh_l0.grad.clone()))
        encoder.zero_grad()
    for ours, packed in zip(*results, strict=True):
        torch.testing.assert_close(ours, packed, rtol=1e-5, atol=1e-6)
    assert (results[0][0][2, 1:] == 0).all()  # padding positions are zero


def test_the_cpu_path_draws_no_random_numbers_beyond_dropout() -> None:
    """A resumed run must draw what the uninterrupted one drew (see tests/test_resume.py)."""
    src, lengths = torch.randint(1, 11, (2, 4)), torch.tensor([4, 3])
    for hidden in (5, 9):  # a new shape: new one-layer templates made
        encoder = Encoder(
            11, 6, hidden, num_layers=2, cell="gru", bidirectional=True, dropout=0.0, pad_id=0
        )
        before = torch.get_rng_state()
        encoder(src, lengths)
        assert torch.equal(torch.get_rng_state(), before)
