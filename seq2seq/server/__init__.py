"""The translation server (optional extra `serve`: FastAPI on uvicorn; docs/serving.md).

`app` (routes, errors), `parsing` (a request's checks and limits), `batcher`
(cross-request batching on one worker thread), `schemas` (the JSON), `info`
(GET /v1/model), `run` (uvicorn and its graceful stop), `static/index.html` (the page).
Started by `scripts/serve.py`.
"""
