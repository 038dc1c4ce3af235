"""Recurrent decoder: with attention as Bahdanau et al. (2015) or Luong et al. (2015)
published it, or with a fixed context (Cho et al., 2014).

Shapes: B batch, S source length, T target length, E embedding size, H decoder
hidden size, D encoder output size, A attention size, L decoder layers, V vocabulary.

none (Cho et al.): the encoder summary c is fed at every step:
    s_t = RNN([y_{t-1}; c], s_{t-1}),   o_t = tanh(W [s_t; c])
bahdanau (RNNsearch): the previous state queries the attention; its context enters the
cell; a deep output layer (maxout over pairs) reads state, context and previous token:
    c_t = attend(s_{t-1}),   s_t = RNN([y_{t-1}; c_t], s_{t-1}),
    o_t = maxout(W [s_t; c_t; y_{t-1}])
luong (global attention with input feeding): the new state queries the attention; the
attentional vector is fed to the next step:
    s_t = RNN([y_{t-1}; o_{t-1}], s_{t-1}),   c_t = attend(s_t),   o_t = tanh(W [s_t; c_t])
In all, p(y_t) = softmax(W_out dropout(o_t)); attend() scores by `seq2seq.attention`.
"""

from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from seq2seq.attention import Attention, AttentionScore
from seq2seq.encoder import Cell, make_rnn
from seq2seq.errors import UserError
from seq2seq.loss import projected_cross_entropy
from seq2seq.precision import run_rnn

AttentionType = Literal["none", "bahdanau", "luong"]
DEFAULT_SCORE: AttentionScore = "additive"  # of attention_score None: Bahdanau's, either attention


class Memory(NamedTuple):
    """What the decoder reads from the encoder, for a batch.

    The decoder state may hold K consecutive rows per memory row (the beams of beam
    search), so that the memory is neither copied K times nor moved with the beams.
    """

    states: Tensor  # (B, S, D)
    mask: Tensor  # (B, S) bool, True at real source tokens
    keys: Tensor | None  # (B, S, A) projected once per sentence; None without attention
    summary: Tensor  # (B, D)

    def index_select(self, index: Tensor) -> "Memory":
        """Pick (or repeat) batch rows."""
        return Memory(*(None if t is None else t.index_select(0, index) for t in self))


class DecoderState(NamedTuple):
    """The recurrent state carried from one decoder step to the next."""

    hidden: Tensor  # (L, B, H)
    cell: Tensor | None  # (L, B, H) for LSTM, else None
    feed: Tensor | None  # (B, H) previous attentional output (input feeding), or None

    def index_select(self, index: Tensor) -> "DecoderState":
        """Pick (or repeat) batch rows."""
        cell = None if self.cell is None else self.cell.index_select(1, index)
        feed = None if self.feed is None else self.feed.index_select(0, index)
        return DecoderState(self.hidden.index_select(1, index), cell, feed)

    def rnn_state(self) -> Tensor | tuple[Tensor, Tensor]:
        """The state in the form `nn.GRU` / `nn.LSTM` take."""
        return self.hidden if self.cell is None else (self.hidden, self.cell)


class Decoder(nn.Module):
    """Conditional RNN language model over the target, reading the encoder memory."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_size: int,
        memory_size: int,
        *,
        num_layers: int,
        cell: Cell,
        attention: AttentionType,
        attention_score: AttentionScore | None,
        dropout: float,
        pad_id: int,
        tie_embeddings: bool,
    ) -> None:
        super().__init__()
        if attention not in ("none", "bahdanau", "luong"):
            raise UserError(f"model.attention must be none, bahdanau or luong, got {attention!r}")
        if attention == "none" and attention_score is not None:
            raise UserError("model.attention_score needs model.attention bahdanau or luong")
        if tie_embeddings and embed_dim != hidden_size:
            raise ValueError(
                f"tie_embeddings needs embed_dim == hidden_size, got {embed_dim} and {hidden_size}"
            )
        self.cell = cell
        self.kind = attention
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.bridge = nn.Linear(memory_size, num_layers * hidden_size)
        feed_size = hidden_size if attention == "luong" else memory_size
        self.rnn = make_rnn(cell, embed_dim + feed_size, hidden_size, num_layers, dropout=dropout)
        self.attention = None
        if attention != "none":
            score = attention_score or DEFAULT_SCORE
            self.attention = Attention(score, hidden_size, memory_size, hidden_size)
        if attention == "bahdanau":  # deep output: maxout over pairs of 2H units
            self.pre_output = nn.Linear(hidden_size + memory_size + embed_dim, 2 * hidden_size)
        else:
            self.pre_output = nn.Linear(hidden_size + memory_size, hidden_size)
        self.output = nn.Linear(hidden_size, vocab_size)
        if tie_embeddings:
            self.output.weight = self.embed.weight

    def init_memory(self, states: Tensor, mask: Tensor, summary: Tensor) -> Memory:
        """Wrap encoder outputs, projecting the attention keys once."""
        keys = None if self.attention is None else self.attention.project_keys(states)
        return Memory(states, mask, keys, summary)

    def init_state(self, memory: Memory) -> DecoderState:
        """Initial state from the encoder summary through a tanh bridge."""
        batch = memory.summary.size(0)
        hidden = torch.tanh(self.bridge(memory.summary))  # (B, L * H)
        hidden = hidden.view(batch, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        cell = torch.zeros_like(hidden) if self.cell == "lstm" else None
        feed = hidden.new_zeros(batch, self.hidden_size) if self.kind == "luong" else None
        return DecoderState(hidden, cell, feed)

    def forward(self, tgt_in: Tensor, memory: Memory, state: DecoderState) -> Tensor:
        """Teacher-forced decoding: (B, T) previous tokens -> (B, T, V) logits."""
        return self.logits(self.features(tgt_in, memory, state))

    def features(self, tgt_in: Tensor, memory: Memory, state: DecoderState) -> Tensor:
        """Teacher-forced decoding: (B, T) previous tokens -> (B, T, H) outputs (see `logits`)."""
        embedded = self.dropout(self.embed(tgt_in))  # (B, T, E)
        if self.kind == "none":
            outputs, _ = self._fixed_context_steps(embedded, memory, state)  # (B, T, H)
        elif self.kind == "luong":
            per_step = []
            for step_input in embedded.unbind(1):  # views whose backward is one stack
                output, state, _ = self._luong_step(step_input, memory, state)
                per_step.append(output)
            outputs = torch.stack(per_step, dim=1)  # (B, T, H)
        else:
            states, contexts = [], []
            for step_input in embedded.unbind(1):
                new, context, state, _ = self._rnnsearch_recurrence(step_input, memory, state)
                states.append(new)
                contexts.append(context)
            stacked = torch.stack(states, dim=1), torch.stack(contexts, dim=1)  # (B, T, H|D)
            outputs = self._deep_output(*stacked, embedded)  # (B, T, H), one GEMM for all T
        return outputs

    def logits(self, outputs: Tensor) -> Tensor:
        """(..., H) decoder outputs -> (..., V) next-token logits."""
        return self.output(self.dropout(outputs))

    def losses(self, outputs: Tensor, targets: Tensor, **options: Any) -> tuple[Tensor, Tensor]:
        """(B, T, H) outputs and (B, T) next tokens -> the summed label-smoothed loss and NLL
        of their logits, without holding the (B, T, V) logits (projected_cross_entropy,
        which takes `options`)."""
        hidden = self.dropout(outputs).flatten(0, 1)  # (B*T, H)
        projection = self.output.weight, self.output.bias
        return projected_cross_entropy(hidden, *projection, targets.flatten(), **options)

    def step(
        self, prev_tokens: Tensor, memory: Memory, state: DecoderState
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One step: (B*K,) previous tokens, K per memory row -> (B*K, H) outputs (see
        `logits`), new state, (B*K, S) attention or None."""
        embedded = self.dropout(self.embed(prev_tokens))  # (B*K, E)
        if self.kind == "none":
            outputs, state = self._fixed_context_steps(embedded.unsqueeze(1), memory, state)
            return outputs.squeeze(1), state, None  # (B*K, H)
        if self.kind == "luong":
            return self._luong_step(embedded, memory, state)
        new, context, state, weights = self._rnnsearch_recurrence(embedded, memory, state)
        return self._deep_output(new, context, embedded), state, weights

    def _fixed_context_steps(
        self, embedded: Tensor, memory: Memory, state: DecoderState
    ) -> tuple[Tensor, DecoderState]:
        """All steps at once (no feedback but the tokens): (B*K, T, E) -> (B*K, T, H) outputs."""
        beams = embedded.size(0) // memory.summary.size(0)  # K state rows per memory row
        context = memory.summary.repeat_interleave(beams, dim=0)  # (B*K, D)
        context = context.unsqueeze(1).expand(-1, embedded.size(1), -1)  # (B*K, T, D)
        rnn_in = torch.cat([embedded, context], dim=2)  # (B*K, T, E + D)
        rnn_out, final = run_rnn(self.rnn, rnn_in, state.rnn_state())
        outputs = torch.tanh(self.pre_output(torch.cat([rnn_out, context], dim=2)))  # (B*K, T, H)
        return outputs, _as_state(final, feed=None)

    def _luong_step(
        self, embedded: Tensor, memory: Memory, state: DecoderState
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One input-fed step: (B*K, E) -> (B*K, H) output, state, (B*K, S) weights."""
        rnn_in = torch.cat([embedded, state.feed], dim=1).unsqueeze(1)  # (B*K, 1, E + H)
        rnn_out, final = run_rnn(self.rnn, rnn_in, state.rnn_state())
        query = rnn_out.squeeze(1)  # (B*K, H)
        context, weights = self.attention(query, memory.keys, memory.states, memory.mask)
        output = torch.tanh(self.pre_output(torch.cat([query, context], dim=1)))  # (B*K, H)
        return output, _as_state(final, feed=output), weights

    def _rnnsearch_recurrence(
        self, embedded: Tensor, memory: Memory, state: DecoderState
    ) -> tuple[Tensor, Tensor, DecoderState, Tensor]:
        """RNNsearch's recurrence: (B*K, E) -> (B*K, H) new top-layer state, (B*K, D) context
        (from the previous state), new state, (B*K, S) weights."""
        query = state.hidden[-1]  # (B*K, H) s_{t-1}, the top layer's
        context, weights = self.attention(query, memory.keys, memory.states, memory.mask)
        rnn_in = torch.cat([embedded, context], dim=1).unsqueeze(1)  # (B*K, 1, E + D)
        rnn_out, final = run_rnn(self.rnn, rnn_in, state.rnn_state())
        return rnn_out.squeeze(1), context, _as_state(final, feed=None), weights

    def _deep_output(self, new: Tensor, context: Tensor, embedded: Tensor) -> Tensor:
        """maxout(W [s_t; c_t; y_{t-1}]) over pairs of units: (..., H + D + E) -> (..., H)."""
        hidden = self.pre_output(torch.cat([new, context, embedded], dim=-1))  # (..., 2H)
        return hidden.unflatten(-1, (self.hidden_size, 2)).amax(dim=-1)


def _as_state(final: Tensor | tuple[Tensor, Tensor], feed: Tensor | None) -> DecoderState:
    """Wrap what `nn.GRU` / `nn.LSTM` return as the final state."""
    if isinstance(final, tuple):
        return DecoderState(final[0], final[1], feed)
    return DecoderState(final, None, feed)
