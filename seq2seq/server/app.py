"""The HTTP app: POST /v1/translate, GET /v1/model, GET /health, the page at /, OpenAPI at /docs.

Errors are JSON `{"error": ..., "field": ...}` naming the field or limit at fault. The
model runs on the batcher's worker thread only; the event loop parses, queues and waits.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException

from seq2seq import __version__
from seq2seq.alignment import pharaoh
from seq2seq.errors import first_line
from seq2seq.server.batcher import Batcher, QueueFull
from seq2seq.server.parsing import ApiError, Decoding, parse_request, read_body
from seq2seq.server.schemas import (
    Attention,
    ErrorResponse,
    Hypothesis,
    ModelInfo,
    SentenceTranslation,
    Settings,
    TranslateRequest,
    TranslateResponse,
)
from seq2seq.translator import Translation, Translator

PAGE = Path(__file__).with_name("static") / "index.html"
RETRY_AFTER_S = 1


@dataclass
class Gate:
    """Translation requests in flight; after SIGTERM, new ones are refused."""

    draining: bool = False
    in_flight: int = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.draining:
            raise ApiError(503, "the server is stopping", headers=_retry(close=True))
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


@dataclass
class Service:
    """What the routes share: the model, its description and settings, the batcher."""

    translator: Translator
    info: ModelInfo
    batcher: Batcher
    gate: Gate

    @property
    def settings(self) -> Settings:
        return self.info.settings

    async def translate(
        self, sentences: list[str], decoding: Decoding
    ) -> list[SentenceTranslation]:
        """The sentences' translations, decoded on the worker together with others'."""
        pieces = self.translator.tokenizer.encode_src(sentences)
        tokens = sum(len(ids) for ids in pieces) * decoding.beam_size
        try:
            return await self.batcher.submit(
                sentences, decoding, tokens=tokens, timeout=self.settings.timeout_s
            )
        except QueueFull:
            limit = self.settings.max_queue
            message = f"the queue is full ({limit} sentences waiting, --max-queue)"
            raise ApiError(503, message, headers=_retry()) from None
        except asyncio.TimeoutError:
            timeout = self.settings.timeout_s
            raise ApiError(504, f"no translation within {timeout:g} s (--timeout)") from None


def create_app(translator: Translator, info: ModelInfo, threads: int | None = None) -> FastAPI:
    """The app serving `translator`, described by `info` (whose settings it follows);
    `threads`: the intra-op threads of the worker that decodes (None: torch's setting)."""
    settings = info.settings
    batcher = Batcher(
        partial(decode, translator, settings.batch_tokens),
        window_s=settings.batch_window_ms / 1000,
        max_tokens=settings.batch_tokens,
        max_queue=settings.max_queue,
        batching=settings.batching,
        setup=(lambda: None) if threads is None else partial(torch.set_num_threads, threads),
    )
    service = Service(translator, info, batcher, Gate())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop)

    app = FastAPI(
        title="seq2seq translation server",
        version=__version__,
        description="Translates with an RNN encoder-decoder; see docs/serving.md.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.include_router(router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    return app


def decode(
    translator: Translator, batch_tokens: int, sentences: list[str], decoding: Decoding
) -> list[SentenceTranslation]:
    """Runs on the worker thread: one `translate_nbest` call, its results as JSON models."""
    found = translator.translate_nbest(
        sentences,
        nbest=decoding.nbest,
        beam_size=decoding.beam_size,
        length_penalty=decoding.length_penalty,
        alpha=decoding.alpha,
        attention=decoding.attention or decoding.alignment,
        batch_tokens=batch_tokens,
    )
    return [
        as_response(translator, sentence, ranked, decoding)
        for sentence, ranked in zip(sentences, found, strict=True)
    ]


def as_response(
    translator: Translator, sentence: str, ranked: list[Translation], decoding: Decoding
) -> SentenceTranslation:
    best = ranked[0]
    result = SentenceTranslation(text=best.text, score=best.score, log_prob=best.log_prob)
    if decoding.nbest > 1:
        result.nbest = [Hypothesis(text=t.text, score=t.score, log_prob=t.log_prob) for t in ranked]
    if decoding.attention and best.attention is not None:
        source, output = translator.pieces(sentence, best)
        weights = np.round(best.attention.astype(np.float64), 4).tolist()  # (T, S)
        result.attention = Attention(source=source, output=output, weights=weights)
    if decoding.alignment:
        result.alignment = pharaoh(translator.alignment(sentence, best))
    return result


# -- routes --------------------------------------------------------------------------------

router = APIRouter()
ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "not JSON, or empty"),
        (413, "body over --max-body-bytes"),
        (415, "not application/json"),
        (422, "a field of the wrong type, out of range, unknown, or over a limit"),
        (503, "the queue is full, or the server is stopping (see Retry-After)"),
        (504, "no translation within --timeout"),
    ]
}
REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TranslateRequest.model_json_schema()}},
    }
}


@router.post(
    "/v1/translate",
    response_model=TranslateResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=REQUEST_BODY,
)
async def translate(request: Request) -> TranslateResponse:
    """Translate one sentence or a list; n-best lists and attention when asked."""
    start = time.perf_counter()
    service: Service = request.app.state.service
    with service.gate.admit():
        body = await read_body(request, service.settings.max_body_bytes)
        sentences, decoding = parse_request(body, request.headers.get("content-type"), service.info)
        results = await service.translate(sentences, decoding)
    took_ms = round((time.perf_counter() - start) * 1000, 2)
    return TranslateResponse(translations=results, model=service.info.name, took_ms=took_ms)


@router.get("/v1/model", response_model=ModelInfo)
async def model(request: Request) -> ModelInfo:
    """Languages, architecture, sizes, vocabularies, validation score, limits."""
    return request.app.state.service.info


@router.get("/health", responses={503: {"description": "not ready, or stopping"}})
async def health(request: Request) -> JSONResponse:
    """200 once the model is loaded and its worker runs; 503 before, and while stopping."""
    service: Service = request.app.state.service
    batcher = service.batcher
    status = "stopping" if service.gate.draining else "ok" if batcher.alive else "starting"
    content = {
        "status": status,
        "in_flight": service.gate.in_flight,
        "queued": batcher.waiting,
        "batches": batcher.batches,
        "decoded": batcher.decoded,
    }
    return JSONResponse(content, status_code=200 if status == "ok" else 503)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")


# -- errors --------------------------------------------------------------------------------


def _retry(close: bool = False) -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)} | ({"Connection": "close"} if close else {})


async def _api_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ApiError)
    content = {"error": err.message, "field": err.field}
    return JSONResponse(content, status_code=err.status, headers=err.headers)


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    """Starlette's own errors (404, 405) in the same JSON shape."""
    assert isinstance(err, HTTPException)
    content = {"error": err.detail, "field": None}
    return JSONResponse(content, status_code=err.status_code, headers=err.headers)


async def _internal_error(request: Request, err: Exception) -> JSONResponse:
    return JSONResponse({"error": f"internal error: {first_line(err)}", "field": None}, 500)
