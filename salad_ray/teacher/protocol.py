"""The teacher protocol, in one place.

Request: a batch of token-id sequences and k.

Answer, per sequence of length L: ``ids`` (L, k) int64 and ``logprobs`` (L, k) float32, each row
sorted by decreasing probability. Row i (1 <= i < L) is Q(. | seq[:i]): the teacher's distribution
of token i given the tokens before it, as natural-log probabilities normalised over the whole
vocabulary (so a row sums to 1 - tail mass). Row 0 has no context and holds no prediction: its ids
are -1 and its log-probs 0. Every backend answers in exactly this shape.

The HTTP route answers more per position, as ``vllm serve`` does (:class:`PromptScores`): the
sequence's own token i with its log-prob and its rank in the vocabulary, whether or not it is in the
top-k.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from salad_ray import __version__

NO_PREDICTION_ID = -1


class TeacherRequestError(ValueError):
    """A request the teacher refuses; the message names the sequence and what is wrong.

    ``status``, ``kind`` and ``param`` are what the HTTP route answers with (:func:`error_body`).
    """

    status = 400
    kind = "BadRequestError"
    param: str | None = None


class UnknownModelError(TeacherRequestError):
    """A request for a model this teacher does not serve (vLLM answers it with HTTP 404)."""

    status = 404
    kind = "NotFoundError"
    param = "model"


@dataclass(frozen=True)
class TopK:
    ids: np.ndarray  # (L, k) int64
    logprobs: np.ndarray  # (L, k) float32

    def __post_init__(self) -> None:
        if self.ids.shape != self.logprobs.shape or self.ids.ndim != 2:
            raise ValueError(
                f"top-k ids {self.ids.shape} and log-probs {self.logprobs.shape} must be equal (L, k)"
            )

    @classmethod
    def from_rows(cls, ids: np.ndarray, logprobs: np.ndarray) -> TopK:
        """Prepend the empty row 0 to (L - 1, k) predictions for positions 1 .. L - 1."""
        k = ids.shape[1]
        return cls(
            np.concatenate([np.full((1, k), NO_PREDICTION_ID, dtype=np.int64), ids.astype(np.int64)]),
            np.concatenate([np.zeros((1, k), dtype=np.float32), logprobs.astype(np.float32)]),
        )

    def first(self, k: int) -> TopK:
        """The k most likely entries of every row."""
        return TopK(self.ids[:, :k], self.logprobs[:, :k])


@dataclass(frozen=True)
class PromptScores:
    """A sequence's top-k and, per position, the sequence's own token: ``token_logprobs`` (L,)
    float32 is log Q(seq[i] | seq[:i]) and ``token_ranks`` (L,) int64 is 1 + the number of
    vocabulary entries more likely than seq[i] (vLLM's rank). Row 0 holds no prediction: 0 and 0."""

    topk: TopK
    token_logprobs: np.ndarray
    token_ranks: np.ndarray

    def __post_init__(self) -> None:
        rows = self.topk.ids.shape[0]
        if self.token_logprobs.shape != (rows,) or self.token_ranks.shape != (rows,):
            raise ValueError(
                f"token log-probs {self.token_logprobs.shape} and ranks {self.token_ranks.shape} "
                f"must be ({rows},), one per row of the top-k"
            )

    @classmethod
    def from_rows(
        cls, ids: np.ndarray, logprobs: np.ndarray, token_logprobs: np.ndarray, token_ranks: np.ndarray
    ) -> PromptScores:
        """Prepend the empty row 0 to the predictions for positions 1 .. L - 1."""
        return cls(
            TopK.from_rows(ids, logprobs),
            np.concatenate([[0.0], token_logprobs]).astype(np.float32),
            np.concatenate([[0], token_ranks]).astype(np.int64),
        )

    def first(self, k: int) -> PromptScores:
        """The same answer with the k most likely entries of every row (the own token unchanged)."""
        return PromptScores(self.topk.first(k), self.token_logprobs, self.token_ranks)


@dataclass(frozen=True)
class Limits:
    """What a teacher accepts: its vocabulary, its model's context and its largest k.

    ``max_model_len`` is the model's own context (what vLLM calls it and reports in ``/v1/models``);
    a completion must generate one token within it, so the longest prompt is one token shorter.
    """

    vocab_size: int
    max_model_len: int
    max_k: int

    @property
    def max_len(self) -> int:
        """The longest sequence the teacher scores."""
        return self.max_model_len - 1


def validate_request(sequences: list[list[int]], k: int, limits: Limits) -> None:
    """Raise :class:`TeacherRequestError` for anything a backend should not be handed."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise TeacherRequestError(f"k must be a positive integer, got {k!r}")
    if k > limits.max_k:
        raise TeacherRequestError(f"k={k} is larger than this teacher allows ({limits.max_k})")
    if not sequences:
        raise TeacherRequestError("the request holds no sequences")
    for n, seq in enumerate(sequences):
        if len(seq) == 0:
            raise TeacherRequestError(f"sequence {n} is empty")
        if len(seq) > limits.max_len:
            raise TeacherRequestError(
                f"sequence {n} has {len(seq)} tokens; the longest prompt is {limits.max_len} "
                f"(the model's context of {limits.max_model_len} less the one token a completion generates)"
            )
        bad = [t for t in seq if not isinstance(t, (int, np.integer)) or not 0 <= t < limits.vocab_size]
        if bad:
            raise TeacherRequestError(
                f"sequence {n} has token ids outside the vocabulary [0, {limits.vocab_size}): {bad[:5]}"
            )


# ----------------------------------------------------------------- vLLM / OpenAI prompt_logprobs form
#
# vLLM (in-process RequestOutput.prompt_logprobs, or the OpenAI-compatible server's JSON) answers a
# list with one entry per prompt position: None for position 0, then a mapping token id -> (log-prob,
# rank) holding the sequence's own token first and then the top-k (the own token once, when it is
# among them). The helpers below are the only translation between that form and TopK / PromptScores.

# vLLM's server writes a log-prob of -inf as this number (JSON has no infinity).
JSON_NEG_INF = -9999.0


class Entry(NamedTuple):
    """One token's entry in a prompt_logprobs row."""

    logprob: float
    rank: int


def topk_from_rows(rows: list[dict[int, Entry] | None], k: int) -> TopK:
    """vLLM-style rows -> TopK: the entries of ranks 1 .. k of each row; the own token's extra
    entry (outside the top-k) is dropped, also where a tie gives it a rank within k."""
    if not rows or rows[0] is not None:
        raise ValueError("prompt log-probs must start with None for position 0")
    ids = np.empty((len(rows) - 1, k), dtype=np.int64)
    logprobs = np.empty((len(rows) - 1, k), dtype=np.float32)
    for i, row in enumerate(rows[1:]):
        if row is None or len(row) < k:
            raise ValueError(
                f"position {i + 1} has {0 if row is None else len(row)} log-probs, fewer than k={k}"
            )
        # The own token comes first in a row: ranked after its equals, the top-k entries win ties.
        entries = list(row.items())
        best = sorted(entries, key=lambda item: (item[1].rank, item is entries[0]))[:k]
        ids[i] = [int(t) for t, _ in best]
        logprobs[i] = [e.logprob for _, e in best]
    return TopK.from_rows(ids, logprobs)


def scores_from_rows(rows: list[dict[int, Entry] | None], sequence: list[int], k: int) -> PromptScores:
    """vLLM-style rows of ``sequence`` -> PromptScores (top-k, and the own token of each row)."""
    if len(rows) != len(sequence):
        raise ValueError(f"{len(rows)} rows of prompt log-probs for a sequence of {len(sequence)} tokens")
    missing = [i for i in range(1, len(rows)) if sequence[i] not in (rows[i] or {})]
    if missing:
        raise ValueError(f"positions {missing[:5]} have no entry for the sequence's own token")
    own = [rows[i][sequence[i]] for i in range(1, len(rows))]  # type: ignore[index]
    topk = topk_from_rows(rows, k)
    return PromptScores(
        topk,
        np.array([0.0, *(e.logprob for e in own)], dtype=np.float32),
        np.array([0, *(e.rank for e in own)], dtype=np.int64),
    )


def _json_logprob(logprob: float) -> float:
    return float(logprob) if math.isfinite(logprob) else JSON_NEG_INF


def to_prompt_logprobs(
    scores: PromptScores, sequence: list[int], decode: Callable[[int], str]
) -> list[dict[str, dict[str, float | int | str]] | None]:
    """PromptScores -> the JSON rows vLLM's server returns: ``{id: {logprob, rank, decoded_token}}``,
    the sequence's own token first, then the top-k in rank order; ``decode`` turns one id into text."""

    def entry(token: int, logprob: float, rank: int) -> dict[str, float | int | str]:
        return {"logprob": _json_logprob(logprob), "rank": int(rank), "decoded_token": decode(token)}

    rows: list[dict[str, dict[str, float | int | str]] | None] = [None]
    top = scores.topk
    for i in range(1, len(sequence)):
        row = {str(sequence[i]): entry(sequence[i], scores.token_logprobs[i], scores.token_ranks[i])}
        for r, (t, lp) in enumerate(zip(top.ids[i], top.logprobs[i], strict=True)):
            row[str(int(t))] = entry(int(t), lp, r + 1)
        rows.append(row)
    return rows


def _rows_from_json(rows: list[dict[str, dict] | None]) -> list[dict[int, Entry] | None]:
    return [
        None if row is None else {int(t): Entry(v["logprob"], v["rank"]) for t, v in row.items()}
        for row in rows
    ]


# --------------------------------------------------------------- OpenAI-compatible completions (HTTP)
#
# The HTTP form is vLLM's: POST {base}/v1/completions with token-id prompts, ``max_tokens`` >= 1 and
# ``prompt_logprobs`` = k; each choice carries ``prompt_logprobs`` rows as above, and
# ``prompt_token_ids`` when the request sets ``return_token_ids``. The teacher deployment answers it
# and the HTTP client speaks it to either the deployment or `vllm serve`. The deployment scores
# prompts and generates nothing: its choices' ``text`` is empty and ``usage.completion_tokens`` 0.


@dataclass(frozen=True)
class CompletionRequest:
    """The parts of a completions request the teacher reads."""

    sequences: list[list[int]]
    k: int
    model: str | None = None  # None or "": whichever model is served, as in vLLM
    return_token_ids: bool = False


def completion_request(sequences: list[list[int]], k: int, model: str) -> dict:
    return {"model": model, "prompt": sequences, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": k}


def parse_completion_request(body: object) -> CompletionRequest:
    """The request an HTTP body holds; TeacherRequestError names what is malformed."""
    if not isinstance(body, dict):
        raise TeacherRequestError("the request body must be a JSON object")
    prompt, k = body.get("prompt"), body.get("prompt_logprobs")
    if k is None:
        raise TeacherRequestError("prompt_logprobs (k) is required: this endpoint scores prompts")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompt = [prompt]
    if not isinstance(prompt, list) or not all(isinstance(p, list) for p in prompt):
        raise TeacherRequestError(
            "prompt must be a list of token ids or a list of such lists (text is not accepted)"
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise TeacherRequestError(f"model must be a string, got {model!r}")
    return CompletionRequest(prompt, k, model, bool(body.get("return_token_ids")))


def check_model(requested: str | None, served: str) -> None:
    """Raise :class:`UnknownModelError` unless ``requested`` is empty or the served model's name."""
    if requested and requested != served:
        raise UnknownModelError(f"The model `{requested}` does not exist. This teacher serves `{served}`.")


def completion_response(
    scores: list[PromptScores], request: CompletionRequest, model: str, decode: Callable[[int], str]
) -> dict:
    """The JSON answer to ``request``, one choice per sequence, in vLLM's completion shape."""
    choices = [
        {
            "index": n,
            "text": "",
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
            "token_ids": None,
            "prompt_logprobs": to_prompt_logprobs(s, seq, decode),
            "prompt_token_ids": list(seq) if request.return_token_ids else None,
        }
        for n, (s, seq) in enumerate(zip(scores, request.sequences, strict=True))
    ]
    prompt_tokens = sum(len(seq) for seq in request.sequences)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": f"salad-ray-{__version__}",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
        },
    }


def parse_completion_response(body: dict, k: int) -> list[TopK]:
    """The top-k of each choice of a completions answer, in prompt order."""
    choices = sorted(body["choices"], key=lambda c: c["index"])
    return [topk_from_rows(_rows_from_json(c["prompt_logprobs"]), k) for c in choices]


def error_body(error: TeacherRequestError) -> dict:
    """vLLM's error body for a refused request; the HTTP status is ``error.status``."""
    return {"error": {"message": str(error), "type": error.kind, "param": error.param, "code": error.status}}


def model_list(model: str, limits: Limits) -> dict:
    """``GET /v1/models``: the one served model and its context, as vLLM lists it."""
    card = {
        "id": model,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "salad-ray",
        "root": None,
        "parent": None,
        "max_model_len": limits.max_model_len,
        "permission": [],
    }
    return {"object": "list", "data": [card]}
