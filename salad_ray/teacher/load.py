"""A bounded load test of a teacher's completions route: concurrent clients, a share of them bad.

``clients`` threads each send ``requests`` requests one after another to ``{url}/completions``. A
seeded share ``bad_share`` of all requests is malformed: each is one of :func:`bad_requests`, a
request the protocol refuses (:mod:`salad_ray.teacher.protocol`), and must get HTTP 400; every
other request scores real token ids and must get 200 with one choice per prompt. The route holds
the load when both hold for every request; the rate held is

    rate = requests answered (200 or 400) / wall seconds from the first request to the last answer.

It works against any OpenAI-compatible completions server that takes token-id prompts and
``prompt_logprobs`` (the teacher deployment's route, or ``vllm serve``); benchmarks/teacher_load.py
runs it against the deployment and reports the rate.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from salad_ray.teacher.protocol import completion_request


def bad_requests(sequence: list[int], k: int, vocab_size: int, model: str) -> dict[str, bytes]:
    """Malformed bodies, by what is wrong with them, built around one good ``sequence``."""

    def body(**changes) -> bytes:
        return json.dumps({**completion_request([sequence], k, model), **changes}).encode()

    return {
        "empty sequence": body(prompt=[[]]),
        "token id outside the vocabulary": body(prompt=[[*sequence[:-1], vocab_size]]),
        "text prompt": body(prompt="a prompt as text"),
        "no prompt_logprobs": body(prompt_logprobs=None),
        "k of zero": body(prompt_logprobs=0),
        "body not an object": json.dumps([sequence]).encode(),
        "body not JSON": b'{"prompt": [[1, 2',
    }


@dataclass
class LoadResult:
    """What the route answered: counts, the requests answered otherwise than expected, the rate."""

    clients: int
    requests: int
    good: int = 0
    good_answered: int = 0  # 200 with one choice per prompt
    bad: int = 0
    bad_refused: int = 0  # 400
    unexpected: list[str] = field(default_factory=list)  # "<what was sent>: <status> <body excerpt>"
    wall_s: float = 0.0

    @property
    def held(self) -> bool:
        """Every good request answered and every bad one refused with 400."""
        return self.good_answered == self.good and self.bad_refused == self.bad

    @property
    def rate(self) -> float:
        """Requests answered per second."""
        return (self.good_answered + self.bad_refused) / self.wall_s if self.wall_s else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "held": self.held, "rate_per_s": self.rate}


def _post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def run_load(
    url: str,
    model: str,
    sequences: list[list[int]],
    k: int,
    vocab_size: int,
    *,
    clients: int = 8,
    requests: int = 20,
    bad_share: float = 0.25,
    seed: int = 0,
    timeout: float = 120.0,
) -> LoadResult:
    """Send ``clients`` x ``requests`` requests (module docstring); good ones cycle through
    ``sequences``, one prompt each."""
    if not sequences:
        raise ValueError("the load test needs at least one sequence to score")
    if not 0 <= bad_share <= 1:
        raise ValueError(f"bad_share must be in [0, 1], got {bad_share}")
    rng = random.Random(seed)
    bad = list(bad_requests(sequences[0], k, vocab_size, model).items())
    plan: list[list[tuple[str, bytes, bool]]] = []
    for c in range(clients):
        mine = []
        for r in range(requests):
            if rng.random() < bad_share:
                mine.append((*rng.choice(bad), True))
            else:
                seq = sequences[(c * requests + r) % len(sequences)]
                mine.append(("good request", json.dumps(completion_request([seq], k, model)).encode(), False))
        plan.append(mine)
    result = LoadResult(clients, clients * requests)
    endpoint = f"{url.rstrip('/')}/completions"

    def client(mine: list[tuple[str, bytes, bool]]) -> list[tuple[str, bool, int, bytes]]:
        return [(what, is_bad, *_post(endpoint, body, timeout)) for what, body, is_bad in mine]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = [a for mine in pool.map(client, plan) for a in mine]
    result.wall_s = time.perf_counter() - t0
    for what, is_bad, status, body in answers:
        if is_bad:
            result.bad += 1
            ok = status == 400
            result.bad_refused += ok
        else:
            result.good += 1
            ok = status == 200 and len(json.loads(body)["choices"]) == 1
            result.good_answered += ok
        if not ok:
            result.unexpected.append(f"{what}: {status} {body[:200]!r}")
    return result
