"""The teacher client the rest of the system uses.

* :class:`HandleClient` talks to the in-cluster deployment through a Serve handle.
* :class:`HTTPClient` talks to an OpenAI-compatible completions endpoint that accepts token-id prompts
  and ``prompt_logprobs``: vLLM's own server (``vllm serve``), or the deployment's HTTP route.

Both return the protocol's answer (:mod:`salad_ray.teacher.protocol`) and raise
:class:`TeacherRequestError` for a request the teacher refuses. :func:`teacher_client` picks one from
the run config: ``teacher.url`` set means an external server over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from typing import Protocol

from salad_ray.config import RunConfig
from salad_ray.teacher.protocol import (
    TeacherRequestError,
    TopK,
    completion_request,
    parse_completion_response,
)


class TeacherClient(Protocol):
    def topk(self, sequences: list[list[int]], k: int) -> list[TopK]: ...


class HandleClient:
    """The Serve deployment, through a handle (picklable: it reconnects by app name)."""

    def __init__(self, app_name: str):
        self.app_name = app_name
        self._handle = None

    @property
    def handle(self):
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_app_handle(self.app_name)
        return self._handle

    def __getstate__(self) -> dict:
        return {"app_name": self.app_name, "_handle": None}

    def topk(self, sequences: list[list[int]], k: int) -> list[TopK]:
        try:
            return self.handle.score.remote(sequences, k).result()
        except TeacherRequestError as e:  # Ray wraps the replica's error; hand back the original
            raise getattr(e, "cause", e) from None


class HTTPClient:
    """An OpenAI-compatible ``/v1/completions`` endpoint; ``base_url`` ends in ``/v1``."""

    def __init__(self, base_url: str, model: str | None = None, timeout: float = 300.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.model = model or self._first_model()

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=self.timeout) as response:
            return json.load(response)

    def _first_model(self) -> str:
        try:
            return self._get("/models")["data"][0]["id"]
        except (urllib.error.URLError, KeyError, IndexError) as e:
            raise ConnectionError(f"cannot list the models of the teacher at {self.base_url}: {e}") from e

    def topk(self, sequences: list[list[int]], k: int) -> list[TopK]:
        body = json.dumps(completion_request(sequences, k, self.model)).encode()
        request = urllib.request.Request(
            f"{self.base_url}/completions", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return parse_completion_response(json.load(response), k)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):  # OpenAI-style {"error": {"message"}}
                detail = json.loads(detail)["error"]["message"]
            if 400 <= e.code < 500:
                raise TeacherRequestError(
                    f"the teacher at {self.base_url} refused the request: {detail}"
                ) from None
            raise ConnectionError(f"the teacher at {self.base_url} failed ({e.code}): {detail}") from None


def teacher_client(config: RunConfig) -> TeacherClient:
    if config.teacher.url:
        return HTTPClient(config.teacher.url, config.teacher.served_model)
    return HandleClient(config.teacher.app_name)
