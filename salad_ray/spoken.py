"""From a text to a spoken sample: plan the spans, tokenize w, speak the speech spans.

The plan is deterministic in (text, settings, seed), so a sample can be rebuilt or resumed and its
id is stable: ``sample_id`` hashes the text, the span plan, the voice and the TTS settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from salad_ray.batch import Sample
from salad_ray.config import InterleaveConfig
from salad_ray.interleave import TokenSpan, WordSpan, plan_spans, span_text, tokenize_spans
from salad_ray.tts.base import TTSBackend


@dataclass(frozen=True)
class TextPlan:
    """A text cut into spans and tokenized, before any audio exists."""

    text_id: str
    words: list[str]
    word_spans: list[WordSpan]
    ids: list[int]
    token_spans: list[TokenSpan]

    def speech_texts(self) -> list[str]:
        return [span_text(self.words, s) for s in self.word_spans if s.speech]


def _seed_of(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(parts, default=str).encode()).digest()[:8], "little")


def plan_text(
    text_id: str, text: str, tokenizer, bos_id: int | None, config: InterleaveConfig, seed: int = 0
) -> TextPlan:
    """Cut ``text`` into speech/text spans (seeded by the text id) and tokenize it into w."""
    words = text.split()
    rng = np.random.default_rng(_seed_of(text_id, seed, config.mode.value))
    spans = plan_spans(len(words), config, rng)
    ids, token_spans, kept = tokenize_spans(tokenizer, words, spans, bos_id, config.max_tokens)
    return TextPlan(text_id, words[: kept[-1].end], kept, ids, token_spans)


def sample_id_of(plan: TextPlan, voice: str, tts_settings: dict) -> str:
    """Stable id: content + span plan + voice + synthesis settings."""
    spans = [(s.start, s.end, s.speech) for s in plan.word_spans]
    key = json.dumps([plan.text_id, " ".join(plan.words), spans, voice, tts_settings], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def speak(
    plan: TextPlan, tts: TTSBackend, voice: str, tts_settings: dict, source: str = "synthetic"
) -> Sample:
    """Synthesize the plan's speech spans (one TTS call per span) into a :class:`Sample`."""
    audio = tts.synthesize(plan.speech_texts(), voice)
    return Sample(sample_id_of(plan, voice, tts_settings), plan.ids, plan.token_spans, audio, source=source)
