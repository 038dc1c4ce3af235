"""Gradient flow through time: how much of the loss's gradient reaches each encoder state.

For a batch of sentence pairs under teacher forcing, L is the summed token cross-entropy
(no label smoothing, padding ignored) and h_t the encoder's top-layer state at source
position t (directions concatenated). dL/dh_t is the full gradient: through the
recurrence (h_t -> h_{t+1} -> ...), the attention and the summary that starts the
decoder. Averaged by distance from the end of the source, its norm shows vanishing
(falling fast with distance) or exploding (rising) gradients through time.

The encoder's fused RNN kernels give no node per time step (a gradient with respect to
their output misses the recurrence), so the measurement runs the encoder one step at a
time with its own weights (`unrolled_encoder`), the equations of `torch.nn.RNN`, `GRU`
and `LSTM`. For an LSTM, h_t is the output state, not the cell state c_t.

Shapes: B batch, S source length, T target length, E embedding size, H hidden size per
direction, D = H * directions, G = H times the gates of the cell (1, 3 or 4), N longest
source over several batches.
"""

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader

from seq2seq.encoder import Encoder, length_mask
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq

BATCH_KEYS = ("src", "src_lengths", "tgt_in", "tgt_out")  # what `seq2seq.batching.collate` gives
CELL_MODES = ("RNN_TANH", "GRU", "LSTM")  # `nn.RNNBase.mode` of the cells `make_rnn` builds
# States lie in [-1, 1] for all three cells: a gate-order or weight bug errs by ~0.1 or more,
# while fused kernels (cuDNN with TF32, bfloat16) may differ from the step loop by ~1e-3.
REPRODUCTION_TOLERANCE = 1e-2


class UnrolledEncoding(NamedTuple):
    """What `Encoder.forward` returns, and the top layer's state at every step."""

    states: Tensor  # (B, S, D) top-layer outputs, zero at padding
    summary: Tensor  # (B, D) final states of the top layer, directions concatenated
    steps: list[Tensor]  # directions * S tensors (B, H): each direction's, in position order


def unrolled_encoder(encoder: Encoder, src: Tensor, src_lengths: Tensor) -> UnrolledEncoding:
    """`encoder(src, src_lengths)` without dropout, one time step at a time.

    Args:
        encoder: the model's encoder (GRU, LSTM or tanh RNN; any layers; bidirectional).
        src: (B, S) token ids, padded on the right.
        src_lengths: (B,) true lengths, each at least 1.
    """
    rnn = encoder.rnn
    if rnn.mode not in CELL_MODES:
        raise ValueError(f"cannot unroll a {rnn.mode} layer, only {', '.join(CELL_MODES)}")
    layer_input = encoder.embed(src)  # (B, S, E)
    for layer in range(rnn.num_layers):
        directions = [
            _direction_steps(rnn, layer_input, src_lengths, layer=layer, direction=direction)
            for direction in range(encoder.directions)
        ]
        layer_input = torch.cat([torch.stack(steps, dim=1) for steps in directions], dim=2)
    mask = length_mask(src_lengths, src.size(1))  # (B, S)
    states = layer_input.masked_fill(~mask.unsqueeze(2), 0.0)  # (B, S, D)
    rows = torch.arange(src.size(0), device=src.device)
    summary = [states[rows, src_lengths - 1, : rnn.hidden_size]]  # forward: after the last token
    if encoder.directions == 2:
        summary.append(states[:, 0, rnn.hidden_size :])  # backward: after the first token
    return UnrolledEncoding(states, torch.cat(summary, dim=1), [h for d in directions for h in d])


def _direction_steps(
    rnn: nn.RNNBase, inputs: Tensor, lengths: Tensor, *, layer: int, direction: int
) -> list[Tensor]:
    """One layer and direction of `rnn` over (B, S, I) inputs -> S states (B, H) in position
    order. The backward direction starts at each sentence's last token; past a sentence's
    end the state stays as it was (zero before the backward direction starts)."""
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    names = ("weight_ih", "bias_ih", "weight_hh", "bias_hh")
    weight_ih, bias_ih, weight_hh, bias_hh = (getattr(rnn, name + suffix) for name in names)
    projected = F.linear(inputs, weight_ih, bias_ih)  # (B, S, G)
    hidden = inputs.new_zeros(inputs.size(0), rnn.hidden_size)  # (B, H)
    cell = hidden if rnn.mode == "LSTM" else None
    length = inputs.size(1)
    steps: list[Tensor] = [hidden] * length
    for t in reversed(range(length)) if direction else range(length):
        new_hidden, new_cell = _cell_step(
            rnn.mode, projected[:, t], hidden, cell, weight_hh, bias_hh
        )
        real = (t < lengths).unsqueeze(1)  # (B, 1)
        hidden = torch.where(real, new_hidden, hidden)
        cell = None if cell is None else torch.where(real, new_cell, cell)
        steps[t] = hidden
    return steps


def _cell_step(
    mode: str,
    projected: Tensor,
    hidden: Tensor,
    cell: Tensor | None,
    weight_hh: Tensor,
    bias_hh: Tensor,
) -> tuple[Tensor, Tensor | None]:
    """One step, as torch.nn documents the cells: (B, G) input projection W_i x + b_i and
    (B, H) state(s) -> new (B, H) hidden state and LSTM cell state (else None)."""
    recurrent = F.linear(hidden, weight_hh, bias_hh)  # (B, G)
    if mode == "RNN_TANH":
        return torch.tanh(projected + recurrent), None
    if mode == "GRU":
        input_r, input_z, input_n = projected.chunk(3, dim=1)  # (B, H) each
        hidden_r, hidden_z, hidden_n = recurrent.chunk(3, dim=1)
        reset = torch.sigmoid(input_r + hidden_r)
        update = torch.sigmoid(input_z + hidden_z)
        new = torch.tanh(input_n + reset * hidden_n)
        return (1 - update) * new + update * hidden, None
    gate_i, gate_f, gate_g, gate_o = (projected + recurrent).chunk(4, dim=1)  # (B, H) each
    cell = torch.sigmoid(gate_f) * cell + torch.sigmoid(gate_i) * torch.tanh(gate_g)
    return torch.sigmoid(gate_o) * torch.tanh(cell), cell


def encoder_state_gradient_norms(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor
) -> Tensor:
    """The norm of dL/dh_t for each sentence and source position (see the module's
    docstring), measured in eval mode (no dropout); the model's mode is kept.

    Args:
        model: the encoder-decoder.
        src: (B, S) source ids, padded on the right, S at least 1.
        src_lengths: (B,) source lengths (an empty source reads as one padding token,
            as in `Seq2Seq.encode`, and gets no norms).
        tgt_in: (B, T) BOS + target ids.
        tgt_out: (B, T) target ids + EOS, padded with `model.pad_id`.

    Returns:
        (B, S) norms, zero beyond each source's length.
    """
    training = model.training
    model.eval()
    try:  # without cuDNN, whose RNN (the decoder's) has no backward in eval mode
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            grads = _top_state_gradients(model, src, src_lengths, tgt_in, tgt_out)
    finally:
        model.train(training)
    batch, length = src.shape
    per_step = torch.stack(grads).view(-1, length, batch, grads[0].size(1))  # (dirs, S, B, H)
    norms = per_step.square().sum(dim=(0, 3)).sqrt().T  # (B, S)
    return norms * length_mask(src_lengths, length)


def _top_state_gradients(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor
) -> tuple[Tensor, ...]:
    """dL/dh for each top-layer step state of `unrolled_encoder`: directions * S (B, H).

    The decoder gets what `Seq2Seq.encode` gives it from the fused encoder.
    """
    lengths = src_lengths.clamp(min=1)  # as `Seq2Seq.encode`
    encoding = unrolled_encoder(model.encoder, src, lengths)
    _check_reproduces(model.encoder, src, lengths, encoding)
    mask = length_mask(lengths, src.size(1))  # (B, S)
    memory = model.decoder.init_memory(encoding.states, mask, encoding.summary)
    logits = model.decoder(tgt_in, memory, model.decoder.init_state(memory))  # (B, T, V)
    logits = logits.flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32))
    loss = F.cross_entropy(logits, tgt_out.flatten(), ignore_index=model.pad_id, reduction="sum")
    return torch.autograd.grad(loss, encoding.steps)


def _check_reproduces(
    encoder: Encoder, src: Tensor, lengths: Tensor, encoding: UnrolledEncoding
) -> None:
    """The unrolled encoder must give what the fused one gives (RuntimeError if not)."""
    with torch.no_grad():
        states, summary = encoder(src, lengths)
    error = max(
        (states - encoding.states).abs().max().item(),
        (summary - encoding.summary).abs().max().item(),
    )
    if error > REPRODUCTION_TOLERANCE:
        raise RuntimeError(f"the unrolled encoder differs from the encoder by {error:.3g}")


def distance_totals(norms: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(B, S) norms -> (S,) their sums and (S,) sentence counts by distance
    d = length - 1 - t from the end of the source."""
    length = norms.size(1)
    positions = torch.arange(length, device=norms.device)  # (S,)
    distance = src_lengths.unsqueeze(1) - 1 - positions  # (B, S)
    real = distance >= 0
    sums = norms.new_zeros(length).index_add_(0, distance[real], norms[real])
    return sums, torch.bincount(distance[real], minlength=length)


def by_distance_from_end(norms: Tensor, src_lengths: Tensor) -> Tensor:
    """(B, S) norms -> (S,) their mean over sentences at each distance from the end of the
    source (d = length - 1 - t), NaN where no sentence reaches d."""
    sums, counts = distance_totals(norms, src_lengths)
    return sums / counts


def gradient_flow(model: Seq2Seq, batches: Iterable[Mapping[str, Tensor]]) -> tuple[Tensor, Tensor]:
    """`by_distance_from_end` over several batches (`seq2seq.batching.collate`'s, on any
    device) -> (N,) float64 mean norms and (N,) sentence counts by distance."""
    device = next(model.parameters()).device
    sums = torch.zeros(0, dtype=torch.float64)
    counts = torch.zeros(0, dtype=torch.long)
    for batch in batches:
        src, src_lengths, tgt_in, tgt_out = (batch[key].to(device) for key in BATCH_KEYS)
        norms = encoder_state_gradient_norms(model, src, src_lengths, tgt_in, tgt_out)
        batch_sums, batch_counts = distance_totals(norms, src_lengths)
        sums = _add_padded(sums, batch_sums.double().cpu())
        counts = _add_padded(counts, batch_counts.cpu())
    return sums / counts, counts


def _add_padded(a: Tensor, b: Tensor) -> Tensor:
    """a + b for 1-D tensors, the shorter padded with zeros."""
    total = a.new_zeros(max(len(a), len(b)))
    total[: len(a)] += a
    total[: len(b)] += b
    return total


class GradientFlow(Callback):
    """Logs the gradient flow through time every `every_n_steps` optimizer steps:
    `grad_flow/d{d}`, the mean norm of dL/dh_t at distance d from the end of the source,
    for each of `distances` that the sentences reach, and `grad_flow/far_over_near`, the
    farthest of them over d = 0 (below 1: the gradient fades with distance).

    It measures on fixed validation batches, the same at every step, so that the values
    form a curve over training: the last `batches` batches of the validation loader
    (the longest sources, as it sorts by length). Global rank 0 measures and logs, at
    steps 0, N, 2N, ..., each the step whose gradients it measures, as `grad_norm`'s.

    Usage: `--trainer.callbacks+=seq2seq.gradients.GradientFlow
    --trainer.callbacks.every_n_steps 200`; `pl_module` is a `TranslationModule`.
    """

    def __init__(
        self,
        every_n_steps: int = 200,
        batches: int = 1,
        distances: tuple[int, ...] = (0, 5, 10, 20, 50),
    ) -> None:
        if every_n_steps < 1 or batches < 1:
            raise UserError(
                "GradientFlow: every_n_steps and batches must be at least 1, got "
                f"{every_n_steps} and {batches}"
            )
        if 0 not in distances or min(distances) < 0:
            raise UserError(f"GradientFlow: distances must be >= 0 and hold 0, got {distances}")
        self.every_n_steps, self.batches, self.distances = every_n_steps, batches, sorted(distances)
        self._fixed: list[dict] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self._fixed = last_batches(trainer.datamodule.val_dataloader(), self.batches)

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Measure with the weights that gave this step's gradients (`grad_norm`'s), and log
        to the loggers directly, as `LearningRateMonitor` does: at every `every_n_steps`,
        whatever `log_every_n_steps`."""
        step = trainer.global_step
        if trainer.is_global_zero and step % self.every_n_steps == 0:
            values = self.summary(pl_module.model, self._fixed)
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)

    def summary(self, model: Seq2Seq, batches: list[dict]) -> dict[str, float]:
        """The logged values, measured on `batches`."""
        curve, counts = gradient_flow(model, batches)
        reached = [d for d in self.distances if d < len(counts) and counts[d] > 0]
        values = {f"grad_flow/d{d}": curve[d].item() for d in reached}
        if len(reached) > 1:
            values["grad_flow/far_over_near"] = (curve[reached[-1]] / curve[0]).item()
        return values


def last_batches(loader: DataLoader, count: int) -> list[dict]:
    """The last `count` batches that `loader` (with a batch sampler) yields, collated."""
    chosen = list(loader.batch_sampler)[-count:]
    return [loader.collate_fn([loader.dataset[i] for i in indices]) for indices in chosen]
