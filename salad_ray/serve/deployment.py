"""A saved student as a Ray Serve application: speech in, text out, OpenAI's chat form.

Routes (under ``student_server.route_prefix``):

* ``POST /v1/chat/completions``: OpenAI's chat completions with ``input_audio`` parts
  (:mod:`salad_ray.serve.protocol`), answered whole or, with ``stream``, as server-sent events;
* ``GET /v1/models``, ``GET /health``;
* ``GET /``: a page to pick or record audio, add text, and watch the answer stream in.

Each request is validated and prepared on its own (audio decoded and resampled, encoder, adapter,
the context check), so a bad one fails alone with HTTP 400 naming the field and the replica keeps
serving. Serve's dynamic batching then decodes concurrent requests together over one KV cache
(:class:`salad_ray.generation.BatchDecoder`), streaming each its own tokens. A batch is fixed when it
starts: a request that arrives while one decodes waits for the next (no continuous batching), and a
client that leaves mid-stream is decoded to its end. Model work runs on one worker thread per
replica, so the event loop keeps answering while a batch decodes.

``serve run salad_ray.serve.deployment:build_app student=DIR`` (or ``services/student.yaml``) starts
it alone; :func:`deploy_student` starts it from Python. Replicas, autoscaling, batching and the GPU
share come from the run configuration (``student_server``, :mod:`salad_ray.resources`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from sse_starlette import EventSourceResponse

from salad_ray.config import RunConfig, StudentServerConfig, load_config
from salad_ray.generation import SamplingParams
from salad_ray.local_cluster import forget_dead_cluster
from salad_ray.model.student import require_saved
from salad_ray.resources import student_deployment_options
from salad_ray.serve.engine import Delta, Prepared, StudentEngine
from salad_ray.serve.protocol import (
    ChatCompletionRequest,
    Completion,
    RequestError,
    error_body,
    parse_request,
    to_turns,
)

api = FastAPI(title="salad-ray student", description="Speech in, text out: OpenAI's chat completions")


# Defined before the class: serve.ingress serialises the class when it is decorated, so module
# globals its methods use must already exist then.
def _error(error: RequestError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.status)


def _page(base: str) -> str:
    page = resources.files("salad_ray.serve").joinpath("page.html").read_text()
    return page.replace("__BASE__", json.dumps(base.rstrip("/")))


@serve.deployment
@serve.ingress(api)
class StudentDeployment:
    def __init__(self, student: str, settings: StudentServerConfig):
        self.engine = StudentEngine.load(student, settings)
        self.settings = settings
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="student")
        for batched in (self._prepare, self._decode):
            batched.set_max_batch_size(settings.max_batch_size)
            batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _request(self, chat: ChatCompletionRequest) -> tuple[list, SamplingParams, str]:
        """What the engine prepares of a request: its turns (audio decoded), sampling, limit field."""
        field, _ = chat.answer_limit()
        return to_turns(chat, self.settings), chat.sampling(), field

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _prepare(self, requests: list[tuple]) -> list[Prepared | RequestError]:
        """Concurrent requests' audio encoded together, so that they reach ``_decode`` together."""
        return await self._run(self.engine.prepare_many, requests)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _decode(self, batch: list[Prepared]) -> AsyncIterator[list[Delta | type[StopIteration]]]:
        steps = self.engine.stream(batch)
        while (deltas := await self._run(next, steps, None)) is not None:
            yield [StopIteration if d is None else d for d in deltas]

    async def _events(
        self, prepared: Prepared, completion: Completion, include_usage: bool
    ) -> AsyncIterator[str]:
        yield json.dumps(completion.chunk({"role": "assistant", "content": ""}))
        tokens = 0
        async for delta in self._decode(prepared):
            tokens = delta.completion_tokens
            if delta.text:
                yield json.dumps(completion.chunk({"content": delta.text}))
            if delta.finish:
                yield json.dumps(completion.chunk({}, delta.finish))
        if include_usage:
            yield json.dumps(completion.usage_chunk(prepared.prompt_tokens, tokens))
        yield "[DONE]"

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        try:
            body = await request.json()
        except ValueError:
            return _error(RequestError("(body)", "the request body is not valid JSON"))
        try:
            chat = parse_request(body)
            if chat.model is not None and chat.model != self.engine.model_name:
                raise RequestError(
                    "model", f"no model {chat.model!r} here; this serves {self.engine.model_name!r}", 404
                )
            request = await asyncio.get_running_loop().run_in_executor(None, self._request, chat)
            prepared = await self._prepare(request)
            if isinstance(prepared, RequestError):
                raise prepared
        except RequestError as e:
            return _error(e)
        completion = Completion.new(self.engine.model_name)
        if chat.stream:
            return EventSourceResponse(self._events(prepared, completion, chat.include_usage))
        text, finish, tokens = [], "stop", 0
        async for delta in self._decode(prepared):
            text.append(delta.text)
            finish, tokens = delta.finish or finish, delta.completion_tokens
        return JSONResponse(completion.response("".join(text), finish, prepared.prompt_tokens, tokens))

    @api.get("/v1/models")
    def models(self) -> dict[str, Any]:
        model = {
            "id": self.engine.model_name,
            "object": "model",
            "owned_by": "salad-ray",
            "max_model_len": self.engine.context,
        }
        return {"object": "list", "data": [model]}

    @api.get("/health")
    def health(self) -> dict[str, str]:
        return {"status": "ok", "model": self.engine.model_name}

    @api.get("/", response_class=HTMLResponse)
    def page(self, request: Request) -> str:
        return _page(request.scope.get("root_path", ""))


def student_app(config: RunConfig, student: str | Path):
    """The bound Serve application serving the saved student in directory ``student``."""
    path = require_saved(Path(student).resolve())
    return StudentDeployment.options(name="Student", **student_deployment_options(config)).bind(
        str(path), config.student_server
    )


def build_app(args: dict[str, Any]):
    """Application builder for ``serve run`` and Serve config files. Args: ``student`` (the saved
    student's directory), and the run configuration as ``preset``, ``config`` (a YAML file, e.g. a
    run directory's config.yaml) and ``overrides`` (a list, or one ``key=value``). Forgets a dead
    cluster's address first, so that ``serve run salad_ray.serve.deployment:build_app ...`` (which
    builds the application before it connects) does not retry it."""
    forget_dead_cluster()
    if not args.get("student"):
        raise ValueError("the student application needs student=<directory of a saved student>")
    overrides = args.get("overrides") or []
    config = load_config(
        args.get("preset"), args.get("config"), [overrides] if isinstance(overrides, str) else list(overrides)
    )
    return student_app(config, args["student"])


def deploy_student(config: RunConfig, student: str | Path) -> DeploymentHandle:
    """Start (or update) the student application on the connected Ray cluster; Serve's HTTP proxy
    listens on ``student_server.http_host:http_port`` if this starts Serve."""
    s = config.student_server
    serve.start(http_options={"host": s.http_host, "port": s.http_port})
    return serve.run(student_app(config, student), name=s.app_name, route_prefix=s.route_prefix)
