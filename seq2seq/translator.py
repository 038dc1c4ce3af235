"""The Python API for translation: `Translator.from_checkpoint(path).translate(sentences)`."""

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from seq2seq.batching import TokenBatchSampler
from seq2seq.errors import UserError
from seq2seq.model import Seq2Seq, build_model
from seq2seq.search import beam_search, greedy_search
from seq2seq.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class Translator:
    """A trained model with its SentencePiece models, translating batches of raw sentences."""

    def __init__(self, model: Seq2Seq, tokenizer: Tokenizer, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> "Translator":
        """Load a checkpoint written by `scripts/train.py`: it holds everything needed."""
        checkpoint = load_checkpoint(path)
        model = build_model(checkpoint["hyper_parameters"])
        state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise UserError(f"{path}: weights do not fit the model it describes ({err})") from err
        return cls(model, Tokenizer.from_dict(checkpoint["tokenizer"]), resolve_device(device))

    @torch.inference_mode()
    def translate(
        self,
        sentences: list[str],
        *,
        beam_size: int = 5,
        alpha: float = 1.0,
        max_len_a: float = 1.5,
        max_len_b: int = 10,
        batch_tokens: int = 4096,
        progress: bool = False,
    ) -> list[str]:
        """Translate raw sentences, batched by tokens in length order; output in input order.

        `beam_size=1` is greedy search. An empty sentence translates to "".
        """
        if beam_size < 1:
            raise UserError(f"beam size must be at least 1, got {beam_size}")
        source_ids = self._encode_sources(sentences, max_tokens=batch_tokens)
        lengths = [max(len(ids), 1) for ids in source_ids]
        outputs = [""] * len(sentences)
        with tqdm(total=len(sentences), unit="sent", disable=not progress) as bar:
            for batch in TokenBatchSampler(lengths, batch_tokens, shuffle=False):
                src, src_lengths = self._pad([source_ids[i] for i in batch])
                if beam_size == 1:
                    found = greedy_search(
                        self.model, src, src_lengths, max_len_a=max_len_a, max_len_b=max_len_b
                    )
                else:
                    found = beam_search(
                        self.model,
                        src,
                        src_lengths,
                        beam_size=beam_size,
                        alpha=alpha,
                        max_len_a=max_len_a,
                        max_len_b=max_len_b,
                    )
                texts = self.tokenizer.decode_tgt([h.tokens for h in found])
                for index, text, ids in zip(
                    batch, texts, (source_ids[i] for i in batch), strict=True
                ):
                    outputs[index] = text if ids else ""
                bar.update(len(batch))
        return outputs

    def _encode_sources(self, sentences: list[str], *, max_tokens: int) -> list[list[int]]:
        """Source ids per sentence; over-long ones are truncated to `max_tokens` with a warning."""
        source_ids = self.tokenizer.encode_src([s.strip() for s in sentences])
        too_long = [n for n, ids in enumerate(source_ids, start=1) if len(ids) > max_tokens]
        if too_long:
            log.warning("line(s) %s longer than %d tokens: truncated", too_long[:10], max_tokens)
            source_ids = [ids[:max_tokens] for ids in source_ids]
        return source_ids

    def _pad(self, sequences: list[list[int]]) -> tuple[Tensor, Tensor]:
        """(B, S) padded source ids and (B,) lengths on the model's device."""
        lengths = torch.tensor([len(s) for s in sequences])
        src = torch.full((len(sequences), max(int(lengths.max()), 1)), self.model.pad_id)
        for row, ids in enumerate(sequences):
            src[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return src.to(self.device), lengths.to(self.device)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (`weights_only=True`); clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a PyTorch checkpoint (not a zip archive, or truncated)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # the safe unpickler met a non-plain object
        raise UserError(f"{path}: refused to load, it holds more than plain data ({err})") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise UserError(f"{path}: not a readable checkpoint ({_first_line(err)})") from err
    missing = [k for k in ("hyper_parameters", "state_dict", "tokenizer") if k not in checkpoint]
    if missing:
        raise UserError(f"{path}: not a seq2seq training checkpoint (no {', '.join(missing)})")
    return checkpoint


def resolve_device(device: str) -> torch.device:
    """ "auto" picks CUDA when available; "cuda" without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(device)


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
