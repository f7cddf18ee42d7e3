"""From a text to a spoken sample: plan the spans, tokenize w, speak the speech spans.

The plan is deterministic in (text, settings, seed), so a sample can be rebuilt or resumed and its
id is stable: :func:`sample_id` hashes the text id, the voice and every setting that shapes the
sample (:func:`synthesis_settings`). The same id always means the same sample.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from salad_ray.batch import Sample
from salad_ray.config import InterleaveConfig, RunConfig
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


def plan_text(
    text_id: str, text: str, tokenizer, bos_id: int | None, config: InterleaveConfig, seed: int = 0
) -> TextPlan:
    """Cut ``text`` into speech/text spans (seeded by the text id) and tokenize it into w."""
    words = text.split()
    rng = np.random.default_rng(int(stable_hash(text_id, seed, config.mode.value), 16))
    spans = plan_spans(len(words), config, rng)
    ids, token_spans, kept = tokenize_spans(tokenizer, words, spans, bos_id, config.max_tokens)
    return TextPlan(text_id, words[: kept[-1].end], kept, ids, token_spans)


def stable_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def synthesis_settings(config: RunConfig) -> dict:
    """Every setting that changes a synthesized sample: tokenizer, span plan, TTS, seed."""
    tts = config.tts
    return {
        "llm": config.models.llm.model_dump(mode="json"),
        "interleave": config.interleave.model_dump(mode="json"),
        "tts": {
            "backend": tts.backend.value,
            "speed": tts.speed,
            "pitch": tts.pitch,
            "kokoro": tts.kokoro_model.source,
        },
        "seed": config.seed,
    }


def sample_id(text_id: str, voice: str, settings: dict) -> str:
    """Stable id of a sample: its text, its voice and the settings that shape it."""
    return stable_hash(text_id, voice, settings)


def speak(plan: TextPlan, tts: TTSBackend, voice: str, settings: dict, source: str = "synthetic") -> Sample:
    """Synthesize the plan's speech spans (one TTS call per span) into a :class:`Sample`."""
    audio = tts.synthesize(plan.speech_texts(), voice)
    return Sample(sample_id(plan.text_id, voice, settings), plan.ids, plan.token_spans, audio, source=source)
