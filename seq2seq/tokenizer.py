"""SentencePiece subword models for the source and target side.

Every model has the same special ids: PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1,
2, 3. Decoding skips them, so decoded hypotheses need no trimming of padding.
"""

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import sentencepiece as spm

from seq2seq.errors import UserError
from seq2seq.textfiles import atomic_binary_output

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
JOINT_FILE, SRC_FILE, TGT_FILE = "spm.model", "spm.src.model", "spm.tgt.model"
# SentencePiece's list calls start a pool of threads each time, about 0.05-0.1 ms: shorter
# lists than this are faster one item at a time (a server's requests, a batch's outputs).
POOLED_FROM = 128


class _Feed:
    """Wraps a sentence iterator so that its error survives SentencePiece's C++ layer."""

    def __init__(self, sentences: Iterable[str]) -> None:
        self.sentences = sentences
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self.sentences
        except Exception as e:
            self.error = e
            raise


def _train_model(
    sentences: Iterable[str],
    *,
    vocab_size: int,
    model_type: str,
    input_sentence_size: int,
    character_coverage: float,
    seed: int,
) -> bytes:
    """Train one SentencePiece model in memory; return its serialized proto."""
    feed, model = _Feed(sentences), io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(feed),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            hard_vocab_limit=False,  # a tiny corpus may not have vocab_size pieces
            character_coverage=character_coverage,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            num_threads=min(16, os.cpu_count() or 1),
            minloglevel=2,  # errors only
        )
    except RuntimeError as e:
        if feed.error is not None:
            raise feed.error from None
        raise UserError(f"SentencePiece training failed (vocab_size={vocab_size}): {e}") from None
    return model.getvalue()


def _each(call: Callable[[Any], Any], items: list) -> list:
    """`call` over a list: in one pooled call from POOLED_FROM items, else item by item."""
    return call(items) if len(items) >= POOLED_FROM else [call(item) for item in items]


def _processor(model: bytes, origin: str) -> spm.SentencePieceProcessor:
    """Load a serialized model and check its special ids; `origin` names it in errors."""
    try:
        processor = spm.SentencePieceProcessor(model_proto=model)
    except RuntimeError:
        raise UserError(f"{origin}: not a valid SentencePiece model") from None
    found = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
    if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise UserError(
            f"{origin}: special ids (pad, unk, bos, eos) are {found}, "
            f"expected {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}"
        )
    return processor


def _read_model(path: str | Path) -> bytes:
    """The bytes of a model file, checked; a missing or invalid file raises UserError."""
    try:
        model = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"cannot read SentencePiece model {path}: {e.strerror}") from None
    _processor(model, str(path))
    return model


class Tokenizer:
    """A source and a target SentencePiece model; one shared model for a joint vocabulary."""

    def __init__(self, src_model: bytes, tgt_model: bytes) -> None:
        """Build from serialized model protos (the bytes of `.model` files)."""
        self._src_model, self._tgt_model = src_model, tgt_model
        self._src = _processor(src_model, "source SentencePiece model")
        self._tgt = self._src if self.joint else _processor(tgt_model, "target SentencePiece model")

    @classmethod
    def train(
        cls,
        src_sentences: Iterable[str],
        tgt_sentences: Iterable[str],
        *,
        vocab_size: int,
        model_type: Literal["unigram", "bpe"] = "unigram",
        joint: bool = True,
        input_sentence_size: int = 500_000,
        character_coverage: float = 1.0,
        seed: int = 0,
    ) -> "Tokenizer":
        """Train in memory; the iterables are read once each, never held in full.

        SentencePiece samples `input_sentence_size` sentences (0: all) from what
        it reads: for a joint model, from both sides together.
        """
        if model_type not in ("unigram", "bpe"):
            raise UserError(f"SentencePiece model_type must be unigram or bpe, not {model_type!r}")
        options = dict(
            vocab_size=vocab_size,
            model_type=model_type,
            input_sentence_size=input_sentence_size,
            character_coverage=character_coverage,
            seed=seed,
        )
        if joint:
            model = _train_model(chain(src_sentences, tgt_sentences), **options)
            return cls(model, model)
        return cls(_train_model(src_sentences, **options), _train_model(tgt_sentences, **options))

    @classmethod
    def load(cls, src_path: str | Path, tgt_path: str | Path | None = None) -> "Tokenizer":
        """Load `.model` files; without `tgt_path` the source model serves both sides."""
        src_model = _read_model(src_path)
        return cls(src_model, src_model if tgt_path is None else _read_model(tgt_path))

    def save(self, directory: str | Path) -> list[Path]:
        """Write `spm.model` (joint) or `spm.src.model` and `spm.tgt.model`; return the paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.joint:
            files = {directory / JOINT_FILE: self._src_model}
        else:
            files = {directory / SRC_FILE: self._src_model, directory / TGT_FILE: self._tgt_model}
        for path, model in files.items():
            with atomic_binary_output(str(path)) as handle:
                handle.write(model)
        return list(files)

    @classmethod
    def load_dir(cls, directory: str | Path) -> "Tokenizer":
        """Load what `save(directory)` wrote."""
        directory = Path(directory)
        if (directory / JOINT_FILE).exists():
            return cls.load(directory / JOINT_FILE)
        return cls.load(directory / SRC_FILE, directory / TGT_FILE)

    def to_dict(self) -> dict[str, bytes]:
        """The model protos, for embedding in a checkpoint (loads with `weights_only=True`)."""
        return {"src": self._src_model, "tgt": self._tgt_model}

    @classmethod
    def from_dict(cls, state: dict[str, bytes]) -> "Tokenizer":
        """Rebuild from `to_dict()`'s output."""
        return cls(state["src"], state["tgt"])

    @property
    def joint(self) -> bool:
        """Whether source and target share one model."""
        return self._src_model == self._tgt_model

    @property
    def src_vocab_size(self) -> int:
        return self._src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self._tgt.get_piece_size()

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def fingerprint(self) -> str:
        """A short sha256 hex digest of both models."""
        digest = hashlib.sha256(self._src_model)
        digest.update(self._tgt_model)
        return digest.hexdigest()[:16]

    def encode_src(self, texts: list[str]) -> list[list[int]]:
        """Source sentences to ids, without BOS or EOS."""
        return _each(self._src.encode_as_ids, texts)

    def encode_tgt(self, texts: list[str]) -> list[list[int]]:
        """Target sentences to ids, without BOS or EOS."""
        return _each(self._tgt.encode_as_ids, texts)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        """Target ids to detokenized text; PAD, BOS and EOS decode to nothing."""
        return _each(self._tgt.decode_ids, ids)

    def src_pieces(self, text: str) -> list[str]:
        """The source pieces of one sentence, one per id of `encode_src`."""
        return self._src.encode(text, out_type=str)

    def tgt_pieces(self, ids: list[int]) -> list[str]:
        """The target pieces of one id sequence."""
        return [self._tgt.id_to_piece(i) for i in ids]
