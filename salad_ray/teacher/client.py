"""The teacher client the rest of the system uses.

* :class:`HandleClient` talks to the in-cluster deployment through a Serve handle.
* :class:`HTTPClient` talks to an OpenAI-compatible completions endpoint that accepts token-id prompts
  and ``prompt_logprobs``: vLLM's own server (``vllm serve``), or the deployment's HTTP route.

Both return the protocol's answer (:mod:`salad_ray.teacher.protocol`), raise
:class:`TeacherRequestError` for a request the teacher refuses (retrying cannot help), and
:class:`TeacherUnavailable` for a call it could not answer: the replica died in the middle of it, the
server is unreachable or failed. :class:`RetryingClient` makes such a call again, with exponential
waits, and counts the retries. :func:`teacher_client` builds the run's client from its config:
``teacher.url`` set means an external server over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import time
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


class TeacherUnavailable(ConnectionError):
    """The teacher could not answer this call; the same call may succeed later."""


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
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError

        try:
            return self.handle.score.remote(sequences, k).result()
        except TeacherRequestError as e:  # Ray wraps the replica's error; hand back the original
            raise getattr(e, "cause", e) from None
        except (RayActorError, BackPressureError) as e:  # the replica died or is overloaded
            raise TeacherUnavailable(f"the teacher app {self.app_name!r} did not answer: {e}") from e


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
            raise TeacherUnavailable(f"the teacher at {self.base_url} failed ({e.code}): {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:  # unreachable, or cut off
            raise TeacherUnavailable(f"the teacher at {self.base_url} is unreachable: {e}") from e


class RetryingClient:
    """A client whose calls that the teacher could not answer (:class:`TeacherUnavailable`) are made
    again, up to ``retries`` times, after waits of ``wait_s``, 2 ``wait_s``, 4 ``wait_s``, ...;
    ``retried`` counts the calls made again. Refused requests pass through at once."""

    def __init__(self, client: TeacherClient, retries: int, wait_s: float):
        self.client, self.retries, self.wait_s = client, retries, wait_s
        self.retried = 0

    def topk(self, sequences: list[list[int]], k: int) -> list[TopK]:
        attempt = 0
        while True:
            try:
                return self.client.topk(sequences, k)
            except TeacherUnavailable as e:
                if attempt == self.retries:
                    raise TeacherUnavailable(f"{e} (gave up after {self.retries} retries)") from e
                time.sleep(self.wait_s * 2**attempt)
                attempt += 1
                self.retried += 1


def teacher_client(config: RunConfig) -> RetryingClient:
    """The run's teacher, over HTTP when ``teacher.url`` is set, else through the Serve handle, with
    ``teacher.retries`` retries of the calls it could not answer."""
    t = config.teacher
    client = HTTPClient(t.url, t.served_model) if t.url else HandleClient(t.app_name)
    return RetryingClient(client, t.retries, t.retry_wait_s)
