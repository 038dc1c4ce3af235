"""The encoder-decoder: one interface for training (`forward`) and search (`encode`, `decode_step`,
`log_probs`).

Shapes: B batch, S source length, T target length, V target vocabulary.
"""

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from seq2seq.attention import AttentionScore
from seq2seq.decoder import AttentionType, Decoder, DecoderState, Memory
from seq2seq.encoder import Cell, Encoder, length_mask
from seq2seq.errors import UserError


class Seq2Seq(nn.Module):
    """A recurrent encoder-decoder (GRU, LSTM or tanh RNN), with or without attention.

    Args:
        src_vocab_size: source vocabulary size.
        tgt_vocab_size: target vocabulary size.
        pad_id: padding id (both sides).
        bos_id: id that starts every target sequence.
        eos_id: id that ends every target sequence.
        cell: recurrent cell of encoder and decoder.
        attention: "bahdanau" (RNNsearch), "luong" (global attention, input feeding) or
            "none" (fixed context); see seq2seq.decoder.
        attention_score: "additive", "general" or "dot" (see seq2seq.attention); None:
            additive.
        embed_dim: embedding size (both sides).
        hidden_size: encoder hidden size per direction, and decoder hidden size.
        encoder_layers: stacked encoder layers.
        decoder_layers: stacked decoder layers.
        bidirectional: bidirectional encoder.
        dropout: dropout on embeddings, between layers and before the output projection.
        tie_embeddings: share target embedding and output projection (embed_dim == hidden_size).
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        *,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
        cell: Cell = "gru",
        attention: AttentionType = "luong",
        attention_score: AttentionScore | None = None,
        embed_dim: int = 256,
        hidden_size: int = 256,
        encoder_layers: int = 1,
        decoder_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.2,
        tie_embeddings: bool = False,
    ) -> None:
        super().__init__()
        sizes = dict(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            embed_dim=embed_dim,
            hidden_size=hidden_size,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
        )
        _check_settings(sizes, dropout=dropout)
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.encoder = Encoder(
            src_vocab_size,
            embed_dim,
            hidden_size,
            num_layers=encoder_layers,
            cell=cell,
            bidirectional=bidirectional,
            dropout=dropout,
            pad_id=pad_id,
        )
        self.decoder = Decoder(
            tgt_vocab_size,
            embed_dim,
            hidden_size,
            self.encoder.output_size,
            num_layers=decoder_layers,
            cell=cell,
            attention=attention,
            attention_score=attention_score,
            dropout=dropout,
            pad_id=pad_id,
            tie_embeddings=tie_embeddings,
        )

    @property
    def output_size(self) -> int:
        """The width of `decode_step`'s outputs, which `log_probs` reads."""
        return self.decoder.output.in_features

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Memory, DecoderState]:
        """(B, S) source ids and (B,) lengths -> encoder memory and initial decoder state.

        An empty source (length 0) is read as a single padding token.
        """
        if src.size(1) == 0:
            src = src.new_full((src.size(0), 1), self.pad_id)
        src_lengths = src_lengths.clamp(min=1)
        states, summary = self.encoder(src, src_lengths)  # (B, S, D), (B, D)
        memory = self.decoder.init_memory(states, length_mask(src_lengths, src.size(1)), summary)
        return memory, self.decoder.init_state(memory)

    def decode_step(
        self, memory: Memory, state: DecoderState, prev_tokens: Tensor
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """(B*K,) previous tokens, K rows per memory row -> (B*K, H) decoder outputs (what
        `log_probs` scores), new state, (B*K, S) attention or None."""
        return self.decoder.step(prev_tokens, memory, state)

    def log_probs(self, outputs: Tensor) -> Tensor:
        """(N, H) decoder outputs -> (N, V) log-probabilities of the next token."""
        return torch.log_softmax(self.decoder.logits(outputs).float(), dim=-1)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced: (B, S) source, (B,) lengths, (B, T) BOS + target -> (B, T, V) logits."""
        return self.decoder.logits(self.features(src, src_lengths, tgt_in))

    def features(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced, as `forward`, up to the (B, T, H) decoder outputs: what
        `decoder.logits` projects, and `decoder.losses` scores without (B, T, V) logits."""
        memory, state = self.encode(src, src_lengths)
        return self.decoder.features(tgt_in, memory, state)


def _check_settings(sizes: Mapping[str, int], *, dropout: float) -> None:
    """Sizes at least 1, dropout in [0, 1); errors name the settings as `model.<name>`."""
    for name, value in sizes.items():
        if value < 1:
            raise UserError(f"model.{name} must be at least 1, got {value}")
    if not 0 <= dropout < 1:
        raise UserError(f"model.dropout must be in [0, 1), got {dropout}")


def build_model(hparams: Mapping[str, Any]) -> Seq2Seq:
    """Build a `Seq2Seq` from a mapping that may hold other settings too (e.g. hparams)."""
    names = inspect.signature(Seq2Seq).parameters
    return Seq2Seq(**{name: value for name, value in hparams.items() if name in names})
