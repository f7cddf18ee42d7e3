"""The teacher protocol, in one place.

Request: a batch of token-id sequences and k.

Answer, per sequence of length L: ``ids`` (L, k) int64 and ``logprobs`` (L, k) float32, each row
sorted by decreasing probability. Row i (1 <= i < L) is Q(. | seq[:i]): the teacher's distribution
of token i given the tokens before it, as natural-log probabilities normalised over the whole
vocabulary (so a row sums to 1 - tail mass). Row 0 has no context and holds no prediction: its ids
are -1 and its log-probs 0. Every backend answers in exactly this shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_PREDICTION_ID = -1


class TeacherRequestError(ValueError):
    """A request the teacher refuses; the message names the sequence and what is wrong."""


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


@dataclass(frozen=True)
class Limits:
    """What a teacher accepts: its vocabulary, context length and largest k."""

    vocab_size: int
    max_len: int
    max_k: int


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
            raise TeacherRequestError(f"sequence {n} has {len(seq)} tokens; the context is {limits.max_len}")
        bad = [t for t in seq if not isinstance(t, (int, np.integer)) or not 0 <= t < limits.vocab_size]
        if bad:
            raise TeacherRequestError(
                f"sequence {n} has token ids outside the vocabulary [0, {limits.vocab_size}): {bad[:5]}"
            )


# ----------------------------------------------------------------- vLLM / OpenAI prompt_logprobs form
#
# vLLM (in-process RequestOutput.prompt_logprobs, or the OpenAI-compatible server's JSON) answers a
# list with one entry per prompt position: None for position 0, then a mapping token id -> log-prob
# holding the top-k *plus the actual token* when it falls outside them. The two helpers below are the
# only translation between that form and TopK.


def from_prompt_logprobs(rows: list[dict[int, float] | None], k: int) -> TopK:
    """vLLM-style rows -> TopK: the k most likely entries of each row, the extra actual token dropped."""
    if not rows or rows[0] is not None:
        raise ValueError("prompt log-probs must start with None for position 0")
    ids = np.empty((len(rows) - 1, k), dtype=np.int64)
    logprobs = np.empty((len(rows) - 1, k), dtype=np.float32)
    for i, row in enumerate(rows[1:]):
        if row is None or len(row) < k:
            raise ValueError(
                f"position {i + 1} has {0 if row is None else len(row)} log-probs, fewer than k={k}"
            )
        best = sorted(row.items(), key=lambda item: -item[1])[:k]
        ids[i] = [int(t) for t, _ in best]
        logprobs[i] = [lp for _, lp in best]
    return TopK.from_rows(ids, logprobs)


def to_prompt_logprobs(answer: TopK) -> list[dict[str, dict[str, float | int]] | None]:
    """TopK -> the OpenAI-compatible JSON rows vLLM's server returns ({id: {logprob, rank}})."""
    rows: list[dict[str, dict[str, float | int]] | None] = [None]
    for ids, lps in zip(answer.ids[1:], answer.logprobs[1:], strict=True):
        rows.append(
            {
                str(int(t)): {"logprob": float(lp), "rank": r + 1}
                for r, (t, lp) in enumerate(zip(ids, lps, strict=True))
            }
        )
    return rows


# --------------------------------------------------------------- OpenAI-compatible completions (HTTP)
#
# The HTTP form is vLLM's: POST {base}/v1/completions with token-id prompts, ``max_tokens`` >= 1 and
# ``prompt_logprobs`` = k; each choice carries ``prompt_logprobs`` rows as above. The teacher
# deployment answers it, and the HTTP client speaks it to either the deployment or `vllm serve`.


def completion_request(sequences: list[list[int]], k: int, model: str) -> dict:
    return {"model": model, "prompt": sequences, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": k}


def parse_completion_request(body: object) -> tuple[list[list[int]], int]:
    """The (sequences, k) of an HTTP request body; TeacherRequestError names what is malformed."""
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
    return prompt, k


def completion_response(answers: list[TopK], model: str) -> dict:
    choices = [
        {
            "index": n,
            "text": "",
            "logprobs": None,
            "finish_reason": "length",
            "prompt_logprobs": to_prompt_logprobs(a),
        }
        for n, a in enumerate(answers)
    ]
    return {"object": "text_completion", "model": model, "choices": choices}


def parse_completion_response(body: dict, k: int) -> list[TopK]:
    choices = sorted(body["choices"], key=lambda c: c["index"])
    return [
        from_prompt_logprobs(
            [
                None if row is None else {int(t): v["logprob"] for t, v in row.items()}
                for row in c["prompt_logprobs"]
            ],
            k,
        )
        for c in choices
    ]
