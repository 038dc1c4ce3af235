"""The translation server: bad input, batching across requests, limits, a graceful stop.

API tests use FastAPI's TestClient; those that need real concurrency serve the app with
uvicorn on a loopback port (`live_server`), and the SIGTERM test runs scripts/serve.py.
The page in a real browser: test_server_page.py.
"""

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi", reason="the server needs the extra `serve` (FastAPI, uvicorn)")
from fastapi import FastAPI
from fastapi.testclient import TestClient

from seq2seq.alignment import pharaoh
from seq2seq.cli.serve import build_parser
from seq2seq.cli.serve import main as serve_main
from seq2seq.cli.shortlist import main as shortlist_main
from seq2seq.server import run as server_run
from seq2seq.server.app import create_app
from seq2seq.server.batcher import Batcher, QueueFull
from seq2seq.server.info import describe_model
from seq2seq.server.run import threads_for_worker
from seq2seq.server.schemas import Settings
from seq2seq.translator import Translator

SERVE = Path(__file__).resolve().parents[1] / "scripts" / "serve.py"
GOOD = {"text": "dreiundzwanzig", "beam_size": 2}


@pytest.fixture(scope="module")
def checkpoint(trained: Path) -> Path:
    return trained / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def translator(checkpoint: Path) -> Translator:
    return Translator.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def sentences(tiny_corpus: Path) -> list[str]:
    return (tiny_corpus / "test.de").read_text(encoding="utf-8").splitlines()


@pytest.fixture
def make_app(checkpoint: Path, translator: Translator) -> Callable[..., FastAPI]:
    """`make_app(model=translator, **settings)`: the app serving the tiny checkpoint."""

    def make(model: Any = translator, **settings: Any) -> FastAPI:
        return create_app(model, describe_model([str(checkpoint)], Settings(**settings)))

    return make


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        yield test_client


class Held:
    """A translator whose decoding waits for `release`: it holds the worker thread."""

    def __init__(self, translator: Translator) -> None:
        self.translator, self.tokenizer = translator, translator.tokenizer
        self.entered, self.release = threading.Event(), threading.Event()

    def translate_nbest(self, sentences: list[str], **options: Any) -> list:
        self.entered.set()
        self.release.wait(timeout=60)
        return self.translator.translate_nbest(sentences, **options)

    def pieces(self, *args: Any) -> tuple[list[str], list[str]]:
        return self.translator.pieces(*args)


class FailsOn:
    """Wraps a translator: decoding fails for any call that holds the sentence `bad`;
    records the sentences of each call."""

    def __init__(self, inner: Any, bad: str) -> None:
        self.inner, self.tokenizer, self.bad = inner, inner.tokenizer, bad
        self.calls: list[list[str]] = []

    def translate_nbest(self, sentences: list[str], **options: Any) -> list:
        self.calls.append(list(sentences))
        if self.bad in sentences:
            raise RuntimeError(f"cannot decode {self.bad!r}")
        return self.inner.translate_nbest(sentences, **options)

    def pieces(self, *args: Any) -> tuple[list[str], list[str]]:
        return self.inner.pieces(*args)


def post(url: str, payload: dict, timeout: float = 60) -> tuple[int, dict, Message]:
    """POST JSON to a live server: status, JSON body and headers (errors included)."""
    data = json.dumps(payload).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.load(err), err.headers


def check_good_request(client: TestClient, translator: Translator) -> None:
    response = client.post("/v1/translate", json=GOOD)
    assert response.status_code == 200, response.text
    expected = translator.translate([GOOD["text"]], beam_size=GOOD["beam_size"])
    assert [t["text"] for t in response.json()["translations"]] == expected


# -- bad input ----------------------------------------------------------------------------

JSON = {"content-type": "application/json"}
BAD = [  # (body, headers, status, field, words of the message)
    (b"{", JSON, 400, "body", "invalid JSON"),
    (b"", JSON, 400, "body", "empty"),
    (b"[1, 2]", JSON, 422, "body", "object"),
    (b'{"text": "x"}', {"content-type": "text/plain"}, 415, "content-type", "application/json"),
    ({"beam_size": 2}, None, 422, "text", "required"),
    ({"text": 5}, None, 422, "text", "string or a list of strings"),
    ({"text": ["a", 5]}, None, 422, "text", "string or a list of strings"),
    ({"text": "a", "beam_size": "5"}, None, 422, "beam_size", "valid integer"),
    ({"text": "a", "beam_size": 2.5}, None, 422, "beam_size", "integer"),
    ({"text": "a", "greedy": "yes"}, None, 422, "greedy", "boolean"),
    ({"text": "a", "attention": 1}, None, 422, "attention", "boolean"),
    ({"text": "a", "colour": "red"}, None, 422, "colour", "unknown field"),
    ({"text": "a", "beam_size": 0}, None, 422, "beam_size", "greater than or equal to 1"),
    ({"text": "a", "beam_size": 33}, None, 422, "beam_size", "less than or equal to 32"),
    ({"text": "a", "nbest": 3, "beam_size": 2}, None, 422, "nbest", "more than the beam size"),
    ({"text": "a", "nbest": 2, "greedy": True}, None, 422, "nbest", "beam size 1"),
    ({"text": "a", "alpha": -1}, None, 422, "alpha", "greater than or equal to 0"),
    ({"text": "a", "length_penalty": "long"}, None, 422, "length_penalty", "'average'"),
    ({"text": []}, None, 422, "text", "no sentences"),
    ({"text": ["a"] * 65}, None, 422, "text", "limit of 64 per request (--max-sentences)"),
    ({"text": ["a", "b" * 1001]}, None, 422, "text", "text[1]: 1001 characters, over the limit"),
    ({"text": "a" * 2_000_000}, None, 413, "body", "--max-body-bytes"),
]


@pytest.mark.parametrize(("body", "headers", "status", "field", "words"), BAD)
def test_bad_request_names_the_field_then_a_good_one_succeeds(
    client: TestClient,
    translator: Translator,
    body: bytes | dict,
    headers: dict | None,
    status: int,
    field: str,
    words: str,
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/v1/translate", content=content, headers=headers or JSON)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert words in response.json()["error"]
    check_good_request(client, translator)


def test_body_over_the_limit_without_content_length_gets_413(
    make_app: Callable[..., FastAPI], translator: Translator
) -> None:
    """A chunked body is counted as it arrives."""
    with TestClient(make_app(max_body_bytes=100)) as client:
        chunks = iter([b'{"text": "', b"a" * 200, b'"}'])
        response = client.post("/v1/translate", content=chunks, headers=JSON)
        assert response.status_code == 413
        assert "over 100 bytes" in response.json()["error"]
        check_good_request(client, translator)


# -- answers ------------------------------------------------------------------------------


def test_nbest_scores_and_attention(client: TestClient, translator: Translator) -> None:
    text = ["dreiundzwanzig", "", "sieben"]
    request = {"text": text, "beam_size": 3, "nbest": 2, "attention": True}
    body = client.post("/v1/translate", json=request).json()
    expected = translator.translate_nbest(text, beam_size=3, nbest=2, attention=True)
    assert body["model"].endswith("/best")
    assert body["took_ms"] > 0
    for got, ranked, sentence in zip(body["translations"], expected, text, strict=True):
        assert [h["text"] for h in got["nbest"]] == [t.text for t in ranked]
        assert got["score"] == pytest.approx(ranked[0].score)
        if not sentence:
            assert got["text"] == "" and "attention" not in got
            continue
        source, output = translator.pieces(sentence, ranked[0])
        attention = got["attention"]
        assert (attention["source"], attention["output"]) == (source, output)
        assert len(attention["weights"]) == len(output)
        assert all(len(row) == len(source) for row in attention["weights"])
        assert all(sum(row) == pytest.approx(1, abs=1e-2) for row in attention["weights"])


def test_word_alignments(client: TestClient, translator: Translator) -> None:
    """The best translation's Pharaoh alignment, as the Python API gives it; none without
    asking, and nothing for an empty sentence."""
    text = ["dreiundzwanzig und sieben", "", "vierzehn"]
    body = client.post("/v1/translate", json={"text": text, "alignment": True}).json()
    expected = translator.translate_nbest(text, attention=True)
    for got, (best,), sentence in zip(body["translations"], expected, text, strict=True):
        assert got["alignment"] == pharaoh(translator.alignment(sentence, best))
        assert "attention" not in got
        assert len(got["alignment"].split()) == len(got["text"].split())
    assert body["translations"][1]["alignment"] == ""
    plain = client.post("/v1/translate", json={"text": text}).json()
    assert all("alignment" not in got for got in plain["translations"])


def test_health_model_docs_and_page(client: TestClient, checkpoint: Path) -> None:
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert (info["source_language"], info["target_language"]) == ("de", "en")
    (member,) = info["checkpoints"]
    assert member["path"] == str(checkpoint)
    assert (member["cell"], member["src_vocab_size"], member["hidden_size"]) == ("gru", 60, 16)
    assert member["validation_metric"] == "val_bleu"
    assert member["validation_score"] is not None and member["parameters"] > 0
    assert info["settings"]["max_sentences"] == 64
    assert "swagger" in client.get("/docs").text.lower()
    schema = client.get("/openapi.json").json()["paths"]["/v1/translate"]["post"]
    properties = schema["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"text", "beam_size", "greedy", "nbest", "attention", "alignment"} <= set(properties)
    page = client.get("/")
    assert page.status_code == 200 and 'id="translate"' in page.text
    assert " src=" not in page.text and "<link" not in page.text  # nothing loaded from elsewhere


def test_unknown_path_gets_a_json_404(client: TestClient) -> None:
    response = client.get("/v2/translate")
    assert response.status_code == 404 and response.json()["error"] == "Not Found"


def test_the_server_reads_each_checkpoint_once(
    checkpoint: Path, torch_loads: Counter[tuple[str, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One mapped read gives both the model's description and the translator."""
    monkeypatch.setattr(server_run, "threads_for_worker", torch.get_num_threads)
    monkeypatch.setattr(server_run.GracefulServer, "run", lambda self: None)  # serve nothing
    server_run.run_server(build_parser().parse_args(["--checkpoint", str(checkpoint)]))
    assert torch_loads == {(str(checkpoint), True): 1}


# -- batching across requests --------------------------------------------------------------


def test_concurrent_requests_get_the_outputs_of_each_sentence_alone(
    make_app: Callable[..., FastAPI],
    live_server: Callable[[FastAPI], str],
    translator: Translator,
    sentences: list[str],
) -> None:
    """One sentence a request from 12 threads, greedy and beam 3 mixed: each output is
    translate()'s for that sentence alone, though the server decoded them in batches."""
    check_batched_outputs_alike_alone(
        make_app(batch_window_ms=20), live_server, translator, sentences
    )


def test_with_a_shortlist_too(
    make_app: Callable[..., FastAPI],
    live_server: Callable[[FastAPI], str],
    checkpoint: Path,
    tiny_corpus: Path,
    sentences: list[str],
    tmp_path: Path,
) -> None:
    """Per-sentence shortlists keep a request's output its own; /v1/model names the file."""
    lex = tmp_path / "lex.pt"
    corpus = ["--src", str(tiny_corpus / "train.de"), "--tgt", str(tiny_corpus / "train.en")]
    shortlist_main(["--checkpoint", str(checkpoint), *corpus, "--output", str(lex), "-k", "4"])
    shortlisted = Translator.from_checkpoint(checkpoint, "cpu", shortlist=lex)
    app = make_app(shortlisted, batch_window_ms=20, shortlist=str(lex))
    base = check_batched_outputs_alike_alone(app, live_server, shortlisted, sentences)
    with urllib.request.urlopen(base + "/v1/model", timeout=30) as response:
        assert json.load(response)["settings"]["shortlist"] == str(lex)


def check_batched_outputs_alike_alone(
    app: FastAPI, live_server: Callable[[FastAPI], str], translator: Translator, sentences: list
) -> str:
    """Serves `app`; each one-sentence request's output is `translator`'s for it alone,
    though the server batched them; -> the server's base URL."""
    base = live_server(app)
    url = base + "/v1/translate"
    jobs = [(s, beam) for beam in (1, 3) for s in sentences] * 2
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda job: post(url, {"text": job[0], "beam_size": job[1]}), jobs))
    assert all(status == 200 for status, _, _ in answers)
    for (sentence, beam), (_, body, _) in zip(jobs, answers, strict=True):
        alone = translator.translate([sentence], beam_size=beam)
        assert [t["text"] for t in body["translations"]] == alone
    batcher = app.state.service.batcher
    assert batcher.decoded == len(jobs)
    assert batcher.batches < len(jobs) / 2, "requests were not batched together"
    return base


def test_a_failing_sentence_fails_its_own_request_only(
    make_app: Callable[..., FastAPI],
    live_server: Callable[[FastAPI], str],
    translator: Translator,
) -> None:
    """Three requests queue behind a busy worker and are decoded in one call, which fails
    on one sentence: that request gets a 500, the other two their own translations."""
    held = Held(translator)
    failing = FailsOn(held, "kaputt")
    app = make_app(model=failing)
    url = live_server(app) + "/v1/translate"
    batcher = app.state.service.batcher
    texts = ["eins", "kaputt", "zwei"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(post, url, GOOD)  # taken by the worker, which then waits
        assert held.entered.wait(timeout=30)
        queued = [pool.submit(post, url, {"text": text, "beam_size": 2}) for text in texts]
        deadline = time.monotonic() + 30
        while batcher.waiting < len(texts) and time.monotonic() < deadline:
            time.sleep(0.01)
        held.release.set()
        answers = dict(zip(texts, (future.result() for future in queued), strict=True))
        assert first.result()[0] == 200
    assert sorted(texts) in [sorted(call) for call in failing.calls]  # batched together
    status, body, _ = answers.pop("kaputt")
    assert status == 500 and "cannot decode 'kaputt'" in body["error"]
    for text, (status, body, _) in answers.items():
        assert status == 200
        expected = translator.translate([text], beam_size=2)
        assert [t["text"] for t in body["translations"]] == expected


def test_batcher_groups_by_options_and_slices_results() -> None:
    """Jobs that arrive within the window: one decode call per options, each job its slice."""
    calls = []

    def decode(sentences: list[str], options: str) -> list[str]:
        calls.append((options, list(sentences)))
        return [f"{options}:{s}" for s in sentences]

    async def run(batching: bool) -> list[list[str]]:
        batcher = Batcher(decode, window_s=0.2, max_tokens=1000, max_queue=10, batching=batching)
        batcher.start()
        jobs = [(["a", "b"], "x"), (["c"], "y"), (["d"], "x")]
        try:
            return await asyncio.gather(
                *(batcher.submit(s, o, tokens=len(s), timeout=10) for s, o in jobs)
            )
        finally:
            await asyncio.to_thread(batcher.stop)

    expected = [["x:a", "x:b"], ["y:c"], ["x:d"]]
    assert asyncio.run(run(batching=True)) == expected
    assert calls == [("x", ["a", "b", "d"]), ("y", ["c"])]
    calls.clear()
    assert asyncio.run(run(batching=False)) == expected
    assert calls == [("x", ["a", "b"]), ("y", ["c"]), ("x", ["d"])]


def test_batcher_token_budget_closes_a_batch() -> None:
    calls = []

    def decode(sentences: list[str], options: None) -> list[str]:
        calls.append(len(sentences))
        return sentences

    async def run() -> None:
        batcher = Batcher(decode, window_s=0.2, max_tokens=3, max_queue=10)
        batcher.start()
        try:
            await asyncio.gather(
                *(batcher.submit([str(i)], None, tokens=1, timeout=10) for i in range(7))
            )
        finally:
            await asyncio.to_thread(batcher.stop)

    asyncio.run(run())
    assert calls == [3, 3, 1]


def test_batcher_waits_only_for_the_clients_it_expects() -> None:
    """A lone client's requests are decoded at once. Requests that queue while the worker
    is busy are batched, and the window holds that batch for the client that the last
    batch answered, which comes back and joins it; nobody else is waited for."""
    calls: list[list[str]] = []
    release = threading.Event()

    def decode(sentences: list[str], options: None) -> list[str]:
        calls.append(list(sentences))
        if sentences == ["held"]:
            release.wait(timeout=10)
        return sentences

    async def run() -> tuple[list[float], float]:
        batcher = Batcher(decode, window_s=1.0, max_tokens=100, max_queue=10)
        batcher.start()
        took = []
        try:
            for sentence in ("first", "second", "third"):
                start = time.monotonic()
                await batcher.submit([sentence], None, tokens=1, timeout=10)
                took.append(time.monotonic() - start)
            held = asyncio.ensure_future(batcher.submit(["held"], None, tokens=1, timeout=10))
            while calls[-1] != ["held"]:
                await asyncio.sleep(0.01)
            queued = asyncio.ensure_future(batcher.submit(["queued"], None, tokens=1, timeout=10))
            while batcher.waiting < 1:
                await asyncio.sleep(0.01)
            release.set()
            await held
            await asyncio.sleep(0.2)  # the answered client thinks, then comes back
            start = time.monotonic()
            await asyncio.gather(queued, batcher.submit(["back"], None, tokens=1, timeout=10))
            back_took = time.monotonic() - start
        finally:
            await asyncio.to_thread(batcher.stop)
        return took, back_took

    took, back_took = asyncio.run(run())
    assert max(took) < 0.5  # a lone client: nobody to wait for
    assert calls == [["first"], ["second"], ["third"], ["held"], ["queued", "back"]]
    assert back_took < 0.5  # the batch closed once the expected client was in


def test_batcher_refuses_what_the_queue_cannot_hold() -> None:
    async def run() -> None:
        batcher = Batcher(lambda s, o: s, window_s=0, max_tokens=1, max_queue=2)  # not started
        waiting = asyncio.ensure_future(batcher.submit(["a", "b"], None, tokens=2, timeout=0.2))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(["c"], None, tokens=1, timeout=1)
        with pytest.raises(asyncio.TimeoutError):
            await waiting

    asyncio.run(run())


# -- limits under load ---------------------------------------------------------------------


def test_the_worker_decodes_on_the_threads_that_the_main_thread_gives_up(
    checkpoint: Path, translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main thread keeps one intra-op thread (no second OpenMP team beside the
    worker's); the worker decodes on the threads the main thread had."""
    original = torch.get_num_threads()
    seen: list[tuple[str, int]] = []
    translate_nbest = translator.translate_nbest

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return translate_nbest(*args, **kwargs)

    monkeypatch.setattr(translator, "translate_nbest", recording)
    try:
        torch.set_num_threads(2)
        threads = threads_for_worker()
        assert (threads, torch.get_num_threads()) == (2, 1)
        app = create_app(translator, describe_model([str(checkpoint)], Settings()), threads)
        with TestClient(app) as test_client:
            assert test_client.post("/v1/translate", json=GOOD).status_code == 200
        assert seen == [("seq2seq-decoder", 2)]
        assert torch.get_num_threads() == 1  # the worker's setting is its own
    finally:
        torch.set_num_threads(original)


def test_full_queue_gets_503_with_retry_after(
    make_app: Callable[..., FastAPI],
    live_server: Callable[[FastAPI], str],
    translator: Translator,
) -> None:
    held = Held(translator)
    app = make_app(model=held, max_queue=2, max_sentences=2)
    url = live_server(app) + "/v1/translate"
    batcher = app.state.service.batcher
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(post, url, GOOD)  # taken by the worker, which then waits
        assert held.entered.wait(timeout=30)
        second = pool.submit(post, url, {"text": ["eins", "zwei"]})  # fills the queue
        deadline = time.monotonic() + 30
        while batcher.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, body, headers = post(url, GOOD)
        held.release.set()
        assert status == 503 and "--max-queue" in body["error"]
        assert headers["Retry-After"] == "1"
        assert first.result()[0] == second.result()[0] == 200
    assert post(url, GOOD)[0] == 200


def test_request_waiting_past_the_timeout_gets_504(
    make_app: Callable[..., FastAPI], translator: Translator
) -> None:
    held = Held(translator)
    with TestClient(make_app(model=held, timeout_s=0.3)) as client:
        try:
            response = client.post("/v1/translate", json=GOOD)
        finally:
            held.release.set()
        assert response.status_code == 504 and "--timeout" in response.json()["error"]
        check_good_request(client, translator)


# -- the process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(base: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not become healthy")


def health(base: str) -> dict:
    with urllib.request.urlopen(base + "/health", timeout=5) as response:
        return json.load(response)


class HalfSent:
    """A translation request whose body is sent in two parts: the server admits it when
    the headers arrive, and it stays in flight until `finish` sends the rest."""

    def __init__(self, port: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.rest = body[1:]
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.connection.putrequest("POST", "/v1/translate")
        self.connection.putheader("Content-Type", "application/json")
        self.connection.putheader("Content-Length", str(len(body)))
        self.connection.endheaders(message_body=body[:1])

    def finish(self) -> tuple[int, dict]:
        self.connection.send(self.rest)
        response = self.connection.getresponse()
        answer = response.status, json.load(response)
        self.connection.close()
        return answer


def test_sigterm_during_load_answers_every_request_and_exits_0(
    checkpoint: Path, sentences: list[str], tmp_path: Path
) -> None:
    """Clients send until refused; SIGTERM comes while one request, admitted, still sends
    its body and others wait in a batch window. Each request gets its translation or a
    503, or its connection is refused: none is left without an answer; the request in
    flight at SIGTERM is translated."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(SERVE), "--checkpoint", str(checkpoint), "--port", str(port)]
    command += ["--device", "cpu", "--batch-window-ms", "200", "--log-level", "warning"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stderr=stderr, env=env)
    outcomes: list[str] = []
    try:
        wait_healthy(base, process)
        in_flight = HalfSent(port, GOOD)
        deadline = time.monotonic() + 30
        while health(base)["in_flight"] < 1:  # admitted: its handler reads the body
            assert time.monotonic() < deadline, "the half-sent request was not admitted"
            time.sleep(0.05)

        def client(i: int) -> None:
            while (outcome := send(base, sentences[i % len(sentences)])) == "200":
                outcomes.append(outcome)
            outcomes.append(outcome)

        with ThreadPoolExecutor(max_workers=8) as pool:
            clients = [pool.submit(client, i) for i in range(8)]
            time.sleep(1.5)
            process.send_signal(signal.SIGTERM)
            status, answer = in_flight.finish()
            for done in clients:
                done.result(timeout=60)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert status == 200 and len(answer["translations"]) == 1, answer
    assert set(outcomes) <= {"200", "503", "refused"}, set(outcomes)
    assert "200" in outcomes and len(outcomes) - outcomes.count("200") == 8  # one end each
    assert "Traceback" not in log.read_text()


def send(base: str, sentence: str) -> str:
    """One request: "200", "503" (stopping), "refused" (no connection), else what failed."""
    try:
        status, body, _ = post(base + "/v1/translate", {"text": sentence, "beam_size": 2}, 30)
    except urllib.error.URLError as err:
        return "refused" if isinstance(err.reason, ConnectionRefusedError) else repr(err)
    except OSError as err:
        return repr(err)
    if status == 200 and len(body["translations"]) == 1:
        return "200"
    return f"{status}: {body.get('error')}" if status != 503 else "503"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max-queue", "1", "--max-sentences", "2"], "--max-queue must be at least"),
        (["--timeout", "0"], "--timeout: input should be greater than 0"),
        (["--batch-window-ms", "-1"], "--batch-window-ms"),
    ],
)
def test_bad_options_exit_2_naming_them(
    checkpoint: Path, capsys: pytest.CaptureFixture, flags: list[str], words: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--checkpoint", str(checkpoint), *flags])
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


def test_missing_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    threads = torch.get_num_threads()
    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--checkpoint", str(tmp_path / "none.ckpt")])
    assert exit_info.value.code == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert torch.get_num_threads() == threads  # checked before the threads are given up
