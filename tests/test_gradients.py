"""Gradient flow through time: the unrolled encoder against the fused one, the gradient
norms against a reference written apart (one sentence at a time, with `nn.GRUCell`,
`nn.LSTMCell` or `nn.RNNCell` holding copies of the weights, differentiated with respect
to probes added to the states), and against finite differences in float64."""

import csv
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2seq.batching import collate
from seq2seq.cli.train import fit_and_test
from seq2seq.errors import UserError
from seq2seq.gradients import (
    GradientFlow,
    by_distance_from_end,
    encoder_state_gradient_norms,
    gradient_flow,
    unrolled_encoder,
)
from seq2seq.model import Seq2Seq

CELL_TYPES = {"GRU": nn.GRUCell, "LSTM": nn.LSTMCell, "RNN_TANH": nn.RNNCell}


def tiny_model(cell: str, bidirectional: bool, layers: int, attention: str = "luong") -> Seq2Seq:
    return Seq2Seq(
        13,
        11,
        cell=cell,
        attention=attention,
        embed_dim=5,
        hidden_size=4,
        encoder_layers=layers,
        decoder_layers=layers,
        bidirectional=bidirectional,
        dropout=0.3,
    )


def tiny_batch(lengths: list[int], tgt_lengths: list[int]) -> dict:
    """Random ids (4..10) for sources of `lengths` and targets of `tgt_lengths`."""
    examples = [
        {"src_ids": torch.randint(4, 11, (s,)).tolist(), "tgt_ids": torch.randint(4, 11, (t,))}
        for s, t in zip(lengths, tgt_lengths, strict=True)
    ]
    for index, example in enumerate(examples):
        example.update(tgt_ids=example["tgt_ids"].tolist(), index=index)
    return collate(examples, pad_id=0, bos_id=2, eos_id=3)


def norms_of(model: Seq2Seq, batch: dict) -> Tensor:
    keys = ("src", "src_lengths", "tgt_in", "tgt_out")
    return encoder_state_gradient_norms(model, *(batch[key] for key in keys))


def reference_cells(model: Seq2Seq) -> list[list[nn.Module]]:
    """Per layer, per direction: a cell of the encoder's kind holding copies of its weights."""
    rnn = model.encoder.rnn
    layers = []
    for layer in range(rnn.num_layers):
        pair = []
        for suffix in [f"_l{layer}", f"_l{layer}_reverse"][: model.encoder.directions]:
            input_size = getattr(rnn, f"weight_ih{suffix}").size(1)
            cell = CELL_TYPES[rnn.mode](input_size, rnn.hidden_size).to(rnn.weight_hh_l0.dtype)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).data.copy_(getattr(rnn, f"{name}{suffix}"))
            pair.append(cell)
        layers.append(pair)
    return layers


def reference_loss(
    model: Seq2Seq, cells: list[list[nn.Module]], src: Tensor, tgt: Tensor, probes: Tensor
) -> Tensor:
    """The loss of one sentence pair, (S,) source and (T,) target ids without BOS/EOS, with
    `probes` (directions, S, H) added to the top layer's states: its gradient with respect
    to them is dL/dh_t."""
    inputs = model.encoder.embed(src)  # (S, E)
    length = len(src)
    for layer, pair in enumerate(cells):
        outputs = []
        for direction, cell in enumerate(pair):
            state, by_position = None, [None] * length
            for t in reversed(range(length)) if direction else range(length):
                state = cell(inputs[t : t + 1], state)
                hidden = state[0] if isinstance(state, tuple) else state  # (1, H)
                if layer == len(cells) - 1:
                    hidden = hidden + probes[direction, t]
                    state = (hidden, state[1]) if isinstance(state, tuple) else hidden
                by_position[t] = hidden
            outputs.append(torch.cat(by_position))  # (S, H)
        inputs = torch.cat(outputs, dim=1)  # (S, D)
    size = model.encoder.rnn.hidden_size
    summary = torch.cat([inputs[-1, :size], inputs[0, size:]]).unsqueeze(0)  # (1, D)
    mask = torch.ones(1, length, dtype=torch.bool)
    memory = model.decoder.init_memory(inputs.unsqueeze(0), mask, summary)
    tgt_in = torch.cat([torch.tensor([model.bos_id]), tgt]).unsqueeze(0)  # (1, T + 1)
    tgt_out = torch.cat([tgt, torch.tensor([model.eos_id])])  # (T + 1,)
    logits = model.decoder(tgt_in, memory, model.decoder.init_state(memory))[0]
    return F.cross_entropy(logits, tgt_out, reduction="sum")


def reference_norms(model: Seq2Seq, batch: dict) -> list[Tensor]:
    """Per sentence: (S_b,) norms of the gradient with respect to the probes."""
    model.eval()
    cells, size = reference_cells(model), model.encoder.rnn.hidden_size
    found = []
    for row, length in enumerate(batch["src_lengths"].tolist()):
        src = batch["src"][row, :length]
        tgt = batch["tgt_out"][row, : int(batch["tgt_lengths"][row]) - 1]
        dtype = model.encoder.rnn.weight_hh_l0.dtype
        probes = torch.zeros(model.encoder.directions, length, size, dtype=dtype).requires_grad_()
        (grad,) = torch.autograd.grad(reference_loss(model, cells, src, tgt, probes), probes)
        found.append(grad.square().sum(dim=(0, 2)).sqrt())
    return found


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_unrolled_encoder_equals_the_encoder(
    cell: str, bidirectional: bool, layers: int
) -> None:
    encoder = tiny_model(cell, bidirectional, layers).encoder.eval()
    batch = tiny_batch([5, 7, 1, 3], [2, 2, 2, 2])
    unrolled = unrolled_encoder(encoder, batch["src"], batch["src_lengths"])
    states, summary = encoder(batch["src"], batch["src_lengths"])
    torch.testing.assert_close(unrolled.states, states, rtol=0, atol=1e-5)
    torch.testing.assert_close(unrolled.summary, summary, rtol=0, atol=1e-5)
    assert len(unrolled.steps) == encoder.directions * 7


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong"])
@pytest.mark.parametrize(("bidirectional", "layers"), [(True, 2), (False, 1)])
def test_norms_equal_the_reference(
    cell: str, attention: str, bidirectional: bool, layers: int
) -> None:
    model = tiny_model(cell, bidirectional, layers, attention).train()
    batch = tiny_batch([6, 3, 1, 6], [4, 6, 2, 1])
    norms = norms_of(model, batch)
    assert model.training, "the model's mode is kept"
    assert norms.shape == (4, 6)
    for row, expected in enumerate(reference_norms(model, batch)):
        length = len(expected)
        torch.testing.assert_close(norms[row, :length], expected, rtol=1e-5, atol=1e-7)
        assert (norms[row, length:] == 0).all()
        assert (expected > 0).all()


def test_norms_equal_finite_differences() -> None:
    model = tiny_model("lstm", True, 1, "bahdanau").double().eval()
    batch = tiny_batch([4], [3])
    src, tgt = batch["src"][0], batch["tgt_out"][0, :3]
    cells, eps = reference_cells(model), 1e-6
    probes = torch.zeros(2, 4, 4, dtype=torch.float64)
    grad = torch.zeros_like(probes)
    with torch.no_grad():
        for index in range(probes.numel()):
            step = torch.zeros_like(probes).view(-1).index_fill_(0, torch.tensor(index), eps)
            up = reference_loss(model, cells, src, tgt, probes + step.view_as(probes))
            down = reference_loss(model, cells, src, tgt, probes - step.view_as(probes))
            grad.view(-1)[index] = (up - down) / (2 * eps)
    expected = grad.square().sum(dim=(0, 2)).sqrt()  # (S,)
    torch.testing.assert_close(norms_of(model, batch)[0], expected, rtol=1e-6, atol=1e-9)


def test_an_empty_source_gets_no_norms() -> None:
    model = tiny_model("gru", True, 1)
    norms = norms_of(model, tiny_batch([0, 3], [2, 2]))
    assert (norms[0] == 0).all() and (norms[1] > 0).all()


def test_by_distance_from_end() -> None:
    norms = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 0.0, 0.0], [6.0, 0.0, 0.0, 0.0]])
    curve = by_distance_from_end(norms, torch.tensor([3, 2, 1]))
    # d = 0: the last tokens 3, 5, 6; d = 1: 2, 4; d = 2: 1; d = 3: none
    torch.testing.assert_close(curve[:3], torch.tensor([14 / 3, 3.0, 1.0]))
    assert curve[3].isnan()


def test_gradient_flow_over_batches_equals_one_batch() -> None:
    model = tiny_model("gru", True, 1)
    lengths, tgt_lengths = [2, 5, 3, 5], [3, 1, 2, 4]
    whole = tiny_batch(lengths, tgt_lengths)
    halves = [
        collate(
            [
                {"src_ids": whole["src"][i, :n].tolist(), "tgt_ids": t, "index": i}
                for i, n, t in rows
            ],
            pad_id=0,
            bos_id=2,
            eos_id=3,
        )
        for rows in (
            [(i, lengths[i], whole["tgt_out"][i, : tgt_lengths[i]].tolist()) for i in (0, 2)],
            [(i, lengths[i], whole["tgt_out"][i, : tgt_lengths[i]].tolist()) for i in (1, 3)],
        )
    ]
    curve, counts = gradient_flow(model, halves)
    expected = by_distance_from_end(norms_of(model, whole), whole["src_lengths"])
    torch.testing.assert_close(curve.float(), expected, rtol=1e-5, atol=0)
    assert counts.tolist() == [4, 4, 3, 2, 2]


def test_the_callback_logs_every_n_steps() -> None:
    model = tiny_model("rnn", False, 1)
    batches = [tiny_batch([2, 3], [2, 2]), tiny_batch([7, 6], [3, 3])]
    loader = SimpleNamespace(
        batch_sampler=[[0, 1], [2, 3]],
        dataset=[{"batch": b, "row": r} for b in batches for r in (0, 1)],
        collate_fn=lambda rows: rows[0]["batch"],
    )
    logged = []
    logger = SimpleNamespace(log_metrics=lambda values, step: logged.append((step, values)))
    datamodule = SimpleNamespace(val_dataloader=lambda: loader)
    trainer = SimpleNamespace(is_global_zero=True, datamodule=datamodule, loggers=[logger])
    module = SimpleNamespace(model=model)
    callback = GradientFlow(every_n_steps=2, distances=(0, 5, 20))
    callback.on_train_start(trainer, module)
    for step in range(3):
        trainer.global_step = step
        callback.on_before_optimizer_step(trainer, module, None)
    assert [step for step, _ in logged] == [0, 2]
    logged = [values for _, values in logged]
    assert logged[0] == logged[1]
    assert set(logged[0]) == {"grad_flow/d0", "grad_flow/d5", "grad_flow/far_over_near"}
    expected = by_distance_from_end(norms_of(model, batches[1]), batches[1]["src_lengths"])
    assert logged[0]["grad_flow/d5"] == pytest.approx(expected[5].item(), rel=1e-6)
    ratio = logged[0]["grad_flow/d5"] / logged[0]["grad_flow/d0"]
    assert logged[0]["grad_flow/far_over_near"] == pytest.approx(ratio)


def test_the_callback_checks_its_settings() -> None:
    with pytest.raises(UserError, match="every_n_steps"):
        GradientFlow(every_n_steps=0)
    with pytest.raises(UserError, match="distances"):
        GradientFlow(distances=(5, 10))


def test_the_callback_logs_in_a_training_run(
    tmp_path: Path, train_args: Callable[..., list[str]]
) -> None:
    """The command line of docs/gradients.md; values land in the CSV logs at steps 0, 2."""
    callback = ["--trainer.callbacks+=seq2seq.gradients.GradientFlow"]
    callback += ["--trainer.callbacks.every_n_steps", "2", "--trainer.callbacks.batches", "2"]
    limits = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "2"]
    fit_and_test(train_args(tmp_path, *callback, *limits, "--trainer.limit_test_batches", "1"))
    metrics = next(tmp_path.glob("**/metrics.csv"))
    with open(metrics, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["grad_flow/d0"]]
    assert [int(row["step"]) for row in rows] == [0, 2]
    for row in rows:
        assert float(row["grad_flow/d0"]) > 0 and float(row["grad_flow/far_over_near"]) > 0
