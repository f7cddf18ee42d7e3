"""Why a record is not used, and how many records each pipeline used, quarantined and skipped.

Every record a text or speech source yields ends in exactly one of three places:

* **written**: a sample in a shard;
* **quarantined**: kept in the store's quarantine as it was read, with its origin, the stage that
  refused it and a :class:`Reason` whose :attr:`Reason.skips` is False (the record itself is bad:
  unparseable, not text, not prose, outside the word window, unspeakable, ...);
* **skipped**: counted under a :class:`Reason` whose :attr:`Reason.skips` is True and not kept (the
  record is fine but not for this pipeline: a duplicate, a held-out text, committed by an earlier run).

:class:`Reason` is the one list of reason names; stages, readers, the run summary and the report
all name reasons through it. :class:`PipelineReport` holds one pipeline run's counts, and its
``inputs`` equal written + quarantined + skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Reason(StrEnum):
    """Why a record was not written: the value is the name counts are shown under."""

    # The record cannot be read as a text.
    UNPARSEABLE = "unparseable JSON"
    NO_TEXT_FIELD = "no text field"
    NOT_A_STRING = "not a string"
    NOT_UTF8 = "not valid UTF-8"
    # The text is not one to speak or train on.
    EMPTY = "empty or whitespace-only text"
    TOO_SHORT = "too short"
    OVER_LONG = "over-long text"
    OVER_LONG_WORD = "over-long word"
    MARKUP = "markup"
    NOT_PROSE = "not prose"
    # Later stages.
    CONTEXT = "cannot fit the context"
    SYNTHESIS = "synthesis failed"
    ASR = "ASR check failed"
    TEACHER = "teacher refused"
    BAD_AUDIO = "bad audio"
    MISALIGNED = "word timestamps do not fit the transcript"
    NO_TEXT_AFTER_SPEECH = "no text after the speech"
    # Skipped: counted, not kept.
    NOT_A_QUOTATION = "not a quotation"  # a dictionary paragraph that is a definition
    DUPLICATE = "duplicate"
    HELDOUT_ONLY_DOMAIN = "held-out-only domain"
    HELDOUT_TEXT = "held-out text"
    DONE = "already done"

    @property
    def skips(self) -> bool:
        """True for reasons that count a record without keeping it (the record is not at fault)."""
        return self in _SKIPS


_SKIPS = frozenset(
    {Reason.NOT_A_QUOTATION, Reason.DUPLICATE, Reason.HELDOUT_ONLY_DOMAIN, Reason.HELDOUT_TEXT, Reason.DONE}
)


@dataclass(frozen=True)
class Refusal:
    """A reason and its details for one record ("over-long text", "31 words > 30")."""

    reason: Reason
    detail: str = ""

    @property
    def message(self) -> str:
        """The reason with its details, as the quarantine's ``reason`` column holds it."""
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


@dataclass
class PipelineReport:
    """What one pipeline run did with its inputs, by count; ``quarantined`` and ``skipped`` are keyed
    by :class:`Reason` value. ``inputs`` = ``written`` + quarantined + skipped (:meth:`accounted`)."""

    name: str
    inputs: int = 0
    written: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0
    teacher_retries: int = 0  # teacher calls that failed and were made again (not records)
    tts_busy_s: float = 0.0  # TTS actors speaking (:func:`tts_usage`)
    tts_idle_s: float = 0.0  # TTS actors in the pool between their first and last call, not speaking

    def count(self, reason: Reason, n: int = 1) -> None:
        """Count ``n`` records refused for ``reason``: as skipped if the reason skips, else quarantined."""
        if n:
            counts = self.skipped if reason.skips else self.quarantined
            counts[reason.value] = counts.get(reason.value, 0) + n

    def accounted(self) -> int:
        """Records written, quarantined or skipped: equals ``inputs`` when nothing went missing."""
        return self.written + sum(self.quarantined.values()) + sum(self.skipped.values())

    def summary(self) -> str:
        def by_reason(counts: dict[str, int]) -> str:
            return ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())) or "none"

        return (
            f"{self.name}: {self.inputs} inputs -> {self.written} written, "
            f"{sum(self.quarantined.values())} quarantined ({by_reason(self.quarantined)}), "
            f"{sum(self.skipped.values())} skipped ({by_reason(self.skipped)}), "
            f"{self.teacher_retries} teacher calls retried in {self.wall_seconds:.0f} s"
            + (f"; TTS actors idle {100 * self.tts_idle_share:.0f} %" if self.tts_busy_s else "")
        )

    @property
    def tts_idle_share(self) -> float:
        """The share of the TTS actors' time in the pool that they sat idle (0 without TTS)."""
        total = self.tts_busy_s + self.tts_idle_s
        return self.tts_idle_s / total if total else 0.0


def tts_usage(starts, ends, actors) -> tuple[float, float]:
    """(busy, idle) seconds of a pipeline's TTS actors from their calls (start, end, actor): an
    actor is busy during its calls and idle between its first call's start and its last call's end
    otherwise, i.e. while the pipeline still had batches for it. Summed over actors:

        busy = Σ_calls (end − start),   idle = Σ_actors (last end − first start) − busy
    """
    spans: dict[str, tuple[float, float]] = {}
    busy = 0.0
    for start, end, actor in zip(starts, ends, actors, strict=True):
        busy += end - start
        first, last = spans.get(actor, (start, end))
        spans[actor] = (min(first, start), max(last, end))
    return busy, sum(last - first for first, last in spans.values()) - busy
