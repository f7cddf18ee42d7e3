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
