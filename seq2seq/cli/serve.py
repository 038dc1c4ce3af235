"""`scripts/serve.py`: serve a checkpoint over HTTP: a JSON API, its documentation, a page.

POST /v1/translate, GET /v1/model, GET /health, the page at /, API docs at /docs
(docs/serving.md). SIGTERM or Ctrl-C: new requests get 503, those in flight are
answered, then the process exits 0.
"""

import argparse
import logging

from seq2seq.cli.translate import add_cpu_speed_arguments
from seq2seq.errors import ArgumentParser, UserError, exit_on_user_error
from seq2seq.translator import BATCH_TOKENS


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split(":", 1)[1].split("\n")[0].strip())
    parser.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="a .ckpt written by scripts/train.py; given several times: their ensemble",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--name", help="the model's name in responses (default: from the paths)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        default="info",
        help="uvicorn's log level (default info)",
    )
    add_cpu_speed_arguments(parser)
    batching = parser.add_argument_group("batching across requests")
    batching.add_argument(
        "--batch-window-ms",
        type=float,
        default=5.0,
        help="how long a batch waits after its first request for others to join (default 5)",
    )
    batching.add_argument(
        "--batch-tokens",
        type=int,
        default=BATCH_TOKENS,
        help=f"source tokens times beam size per batch (default {BATCH_TOKENS})",
    )
    batching.add_argument(
        "--no-batching", action="store_true", help="decode each request alone, in arrival order"
    )
    limits = parser.add_argument_group("limits (over one: a 4xx error naming it)")
    limits.add_argument("--max-sentences", type=int, default=64, help="per request (default 64)")
    limits.add_argument("--max-chars", type=int, default=1000, help="per sentence (default 1000)")
    limits.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="per request (default 1 MiB)"
    )
    limits.add_argument(
        "--max-queue",
        type=int,
        default=1024,
        help="sentences waiting to be decoded; more: 503 with Retry-After (default 1024)",
    )
    limits.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds a request may wait for its translation, then 504 (default 30)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[seq2seq] %(message)s")
    try:
        from seq2seq.server.run import run_server
    except ImportError as err:
        exit_on_user_error(UserError(f"serving needs {err.name}: pip install 'seq2seq[serve]'"))
    try:
        run_server(args)
    except UserError as err:
        exit_on_user_error(err)
