"""The JSON of the HTTP API: requests, responses, errors and settings (FastAPI documents them)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from seq2seq.quantize import Quantize
from seq2seq.search_rules import LengthPenalty
from seq2seq.translator import BATCH_TOKENS

MAX_BEAM = 32
MAX_ALPHA = 10.0


class TranslateRequest(BaseModel):
    """POST /v1/translate: sentences and how to decode them, as translate.py's options."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | list[str] = Field(description="one sentence, or a list of sentences")
    beam_size: int = Field(5, ge=1, le=MAX_BEAM, description="beam width")
    greedy: bool = Field(False, description="greedy search (the same as beam_size 1)")
    nbest: int = Field(1, ge=1, le=MAX_BEAM, description="translations per sentence, best first")
    length_penalty: LengthPenalty = Field(
        "average", description="score / len**alpha (average) or / ((5+len)/6)**alpha (gnmt)"
    )
    alpha: float = Field(1.0, ge=0.0, le=MAX_ALPHA, allow_inf_nan=False)
    attention: bool = Field(False, description="return each sentence's attention weights")
    alignment: bool = Field(
        False, description="return each best translation's word alignment from attention"
    )

    @field_validator("text", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        """One readable error for a wrong type, instead of one per member of the union."""
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise PydanticCustomError("text_type", "must be a string or a list of strings")

    @property
    def sentences(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else self.text


class Hypothesis(BaseModel):
    text: str
    score: float = Field(description="length-normalized log-probability (ranks n-best lists)")
    log_prob: float = Field(description="sum of the token log-probabilities")


class Attention(BaseModel):
    """weights[i][j]: how much output piece i attended to source piece j."""

    source: list[str]
    output: list[str]
    weights: list[list[float]]


class SentenceTranslation(Hypothesis):
    """The best translation of one sentence; its n-best list, attention and word alignment
    when asked."""

    nbest: list[Hypothesis] | None = None
    attention: Attention | None = None
    alignment: str | None = Field(
        None,
        description='Pharaoh pairs "i-j": output word j to source word i, words counted from '
        "0 over the whitespace-separated words of the sentence and of `text`",
    )


class TranslateResponse(BaseModel):
    translations: list[SentenceTranslation] = Field(description="one per sentence, in order")
    model: str
    took_ms: float


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong, naming the field or limit")
    field: str | None = Field(None, description="the request field at fault, if one is")


class Settings(BaseModel):
    """Limits and batching of a server (the `scripts/serve.py` options)."""

    max_sentences: int = Field(64, ge=1, description="sentences per request")
    max_chars: int = Field(1000, ge=1, description="characters per sentence")
    max_body_bytes: int = Field(1 << 20, ge=1, description="bytes of a request body")
    max_queue: int = Field(1024, ge=1, description="sentences waiting to be decoded")
    timeout_s: float = Field(30.0, gt=0, description="seconds a request may wait")
    batching: bool = Field(True, description="decode concurrent requests together")
    batch_window_ms: float = Field(5.0, ge=0, description="how long a batch gathers requests")
    batch_tokens: int = Field(BATCH_TOKENS, ge=1, description="source tokens x beam size per batch")
    quantize: Quantize = Field("none", description="int8: int8 weights (CPU)")
    shortlist: str | None = Field(None, description="the vocabulary shortlist file, if any")


class CheckpointInfo(BaseModel):
    path: str
    cell: str
    attention: str
    attention_score: str | None = None
    embed_dim: int
    hidden_size: int
    encoder_layers: int
    decoder_layers: int
    bidirectional: bool
    parameters: int
    src_vocab_size: int
    tgt_vocab_size: int
    source_language: str | None
    target_language: str | None
    max_source_pieces: int | None = Field(description="longer sources are truncated")
    validation_metric: str | None = Field(description="what chose the checkpoint, e.g. val_bleu")
    validation_score: float | None = Field(description="its best value in training")
    step: int | None = None


class ModelInfo(BaseModel):
    """GET /v1/model: the model (one checkpoint, or an ensemble of several) and the limits."""

    name: str
    source_language: str | None
    target_language: str | None
    has_attention: bool
    checkpoints: list[CheckpointInfo]
    settings: Settings
    max_beam: int = MAX_BEAM
