"""A translation request's body, read and checked: its sentences and decoding options,
or an `ApiError` naming the field or limit at fault."""

from dataclasses import dataclass

from fastapi import Request
from pydantic import ValidationError

from seq2seq.server.schemas import ModelInfo, Settings, TranslateRequest


class ApiError(Exception):
    """A request that cannot be answered: its status and a message naming the field."""

    def __init__(
        self, status: int, message: str, field: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers


@dataclass(frozen=True)
class Decoding:
    """The options that decide a sentence's output: requests with equal ones share a batch."""

    beam_size: int
    nbest: int
    length_penalty: str
    alpha: float
    attention: bool
    alignment: bool


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; 413 as soon as it is known to exceed `limit` bytes."""
    too_large = ApiError(413, f"body: over {limit} bytes (--max-body-bytes)", "body")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def parse_request(
    body: bytes, content_type: str | None, info: ModelInfo
) -> tuple[list[str], Decoding]:
    """The sentences and decoding options of a request body; ApiError for a bad one."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        message = f"content-type: must be application/json, got {content_type}"
        raise ApiError(415, message, "content-type")
    if not body.strip():
        raise ApiError(400, "body: empty, expected a JSON object", "body")
    try:
        request = TranslateRequest.model_validate_json(body)
    except ValidationError as err:
        raise validation_error(err) from None
    check_limits(request.sentences, info.settings)
    beam = 1 if request.greedy else request.beam_size
    if request.nbest > beam:
        raise ApiError(422, f"nbest: {request.nbest} is more than the beam size {beam}", "nbest")
    for field in ("attention", "alignment"):
        if getattr(request, field) and not info.has_attention:
            raise ApiError(422, f"{field}: this model has no attention", field)
    options = (request.nbest, request.length_penalty, request.alpha, request.attention)
    options += (request.alignment,)
    return request.sentences, Decoding(beam, *options)


def check_limits(sentences: list[str], settings: Settings) -> None:
    """422 naming the limit for no sentences, too many, or one too long."""
    if not sentences:
        raise ApiError(422, "text: no sentences", "text")
    if len(sentences) > settings.max_sentences:
        message = (
            f"text: {len(sentences)} sentences, over the limit of {settings.max_sentences} "
            "per request (--max-sentences)"
        )
        raise ApiError(422, message, "text")
    for i, sentence in enumerate(sentences):
        if len(sentence) > settings.max_chars:
            message = (
                f"text[{i}]: {len(sentence)} characters, over the limit of "
                f"{settings.max_chars} per sentence (--max-chars)"
            )
            raise ApiError(422, message, "text")


def validation_error(err: ValidationError) -> ApiError:
    """400 for a body that is not JSON, else 422 naming each field at fault."""
    problems = err.errors(include_url=False)
    if problems[0]["type"] == "json_invalid":
        return ApiError(400, f"body: invalid JSON ({problems[0]['ctx']['error']})", "body")
    messages = []
    for problem in problems:
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        unknown = problem["type"] == "extra_forbidden"
        messages.append(f"{where}: {'unknown field' if unknown else problem['msg']}")
    field = str(problems[0]["loc"][0]) if problems[0]["loc"] else "body"
    return ApiError(422, "; ".join(messages), field)
