"""The teacher as a Ray Serve deployment.

Two ways in, one answer (:mod:`salad_ray.teacher.protocol`):

* a handle: ``handle.score.remote(sequences, k)`` -> list[TopK] (what the rest of the system uses);
* HTTP, vLLM's OpenAI-compatible form: ``POST /v1/completions`` with token-id prompts and
  ``prompt_logprobs`` (so clients written for ``vllm serve`` work unchanged), ``GET /v1/models``,
  ``GET /health``. The answer is the one ``vllm serve`` gives for the same model and request: each
  row of ``prompt_logprobs`` holds the prompt's own token (with its rank, also outside the top-k)
  and the top-k, each entry with its ``decoded_token``; ``prompt_token_ids`` when the request sets
  ``return_token_ids``; HTTP 404 for a model it does not serve; ``max_model_len`` the model's own
  context. It scores prompts and generates nothing (:mod:`salad_ray.teacher.protocol`).

Requests are validated one by one before Serve's dynamic batching merges them, so a bad request
fails alone (HTTP 400 / TeacherRequestError) and the replica keeps serving. Merged requests are
scored in one backend call at the largest k among them, and each gets its own k back.

``serve run services/teacher.yaml`` starts it alone; :func:`deploy_teacher` starts it from Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from salad_ray.assets import resolve
from salad_ray.config import RunConfig, load_config
from salad_ray.local_cluster import forget_dead_cluster
from salad_ray.resources import teacher_deployment_options
from salad_ray.teacher.backends import BackendSpec, build_backend
from salad_ray.teacher.protocol import (
    Limits,
    PromptScores,
    TeacherRequestError,
    TopK,
    check_model,
    completion_response,
    error_body,
    model_list,
    parse_completion_request,
    validate_request,
)

api = FastAPI(
    title="salad-ray teacher", description="Per-position top-k next-token log-probs of the text LLM"
)


# Defined before the class: serve.ingress serialises the class when it is decorated, so module
# globals its methods use must already exist then.
def _refused(error: TeacherRequestError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.status)


def token_decoder(path: str | Path) -> Callable[[int], str]:
    """One token id -> its text, as vLLM's server decodes a logprob entry's ``decoded_token`` (a
    piece of a multi-byte character reads as U+FFFD); cached, as the same ids recur row after row."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    return lru_cache(maxsize=None)(lambda token: tokenizer.decode([token]))


@serve.deployment
@serve.ingress(api)
class TeacherDeployment:
    def __init__(self, spec: BackendSpec, max_batch_size: int, batch_wait_timeout_s: float, model_name: str):
        self.backend = build_backend(spec)
        self.decode = token_decoder(resolve(spec.model, "causal-lm"))
        self.model_name = model_name
        self._score_batch.set_max_batch_size(max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def score(self, sequences: list[list[int]], k: int) -> list[TopK]:
        """Top-k log-probs per position of each sequence; TeacherRequestError for a bad request."""
        return [answer.topk for answer in await self._prompt_scores(sequences, k)]

    async def _prompt_scores(self, sequences: list[list[int]], k: int) -> list[PromptScores]:
        validate_request(sequences, k, self.backend.limits)
        return await self._score_batch(sequences, k)

    def limits(self) -> Limits:
        return self.backend.limits

    def backend_name(self) -> str:
        return self.backend.name

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _score_batch(self, sequences: list[list[list[int]]], ks: list[int]) -> list[list[PromptScores]]:
        flat = [seq for request in sequences for seq in request]
        answers = await self.backend.score(flat, max(ks))
        out, start = [], 0
        for request, k in zip(sequences, ks, strict=True):
            out.append([a.first(k) for a in answers[start : start + len(request)]])
            start += len(request)
        return out

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _refused(TeacherRequestError("the request body is not valid JSON"))
        try:
            completion = parse_completion_request(body)
            check_model(completion.model, self.model_name)
            answers = await self._prompt_scores(completion.sequences, completion.k)
        except TeacherRequestError as e:
            return _refused(e)
        return JSONResponse(completion_response(answers, completion, self.model_name, self.decode))

    @api.get("/v1/models")
    def models(self) -> dict:
        return model_list(self.model_name, self.backend.limits)

    @api.get("/health")
    def health(self) -> dict:
        return {"status": "ok", "backend": self.backend.name}


def teacher_app(config: RunConfig):
    """The bound Serve application of a run's teacher."""
    return TeacherDeployment.options(name="Teacher", **teacher_deployment_options(config)).bind(
        BackendSpec.from_config(config),
        config.teacher.max_batch_size,
        config.teacher.batch_wait_timeout_s,
        config.models.llm.source or "random-init",
    )


def build_app(args: dict[str, Any]):
    """Application builder for ``serve run`` and Serve config files: args ``preset``, ``config`` (a
    YAML path), ``overrides``. Forgets a dead cluster's address first, so that ``serve run
    salad_ray.teacher.deployment:build_app ...`` (which builds the application before it connects)
    does not retry it."""
    forget_dead_cluster()
    return teacher_app(load_config(args.get("preset"), args.get("config"), list(args.get("overrides") or [])))


def _start_serve(config: RunConfig, attempts: int = 10) -> None:
    """Start Serve, or join the instance already on the cluster. Two drivers that start at the same
    moment both find no Serve and race to create its controller; the loser joins the winner's."""
    from ray.exceptions import ActorAlreadyExistsError

    for attempt in range(attempts):
        try:
            serve.start(http_options={"host": config.teacher.http_host, "port": config.teacher.http_port})
            return
        except ActorAlreadyExistsError:
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)  # the winner's controller registers, then start() joins it


def deploy_teacher(config: RunConfig) -> DeploymentHandle:
    """Start (or update) the teacher application on the connected Ray cluster and return its handle."""
    _start_serve(config)
    return serve.run(
        teacher_app(config), name=config.teacher.app_name, route_prefix=config.teacher.route_prefix
    )


@dataclass(frozen=True, order=True)
class Replica:
    actor_id: str
    pid: int
    restarts: int


def live_replicas(app_name: str) -> list[Replica]:
    """The live replicas of a Serve application, from the GCS actor table (no dashboard needed): a
    replica that died and was replaced has a new actor id; one restarted in place, more restarts."""
    from ray._private.state import actors

    return sorted(
        Replica(a["ActorID"], a["Pid"], a["NumRestarts"])
        for a in actors().values()
        if a["ActorClassName"].startswith(f"ServeReplica:{app_name}:") and a["State"] == "ALIVE"
    )
