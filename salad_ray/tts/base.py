"""The TTS interface: text spans in, 16 kHz mono float32 audio per span out, with the voice recorded.

Synthesising each word span on its own gives, by construction, the span alignment that
interleaving needs (no forced alignment). A backend raises :class:`SynthesisError` naming the span
when it cannot speak it; the pipeline quarantines that record and carries on.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np

from salad_ray.config import TTSBackendKind, TTSConfig

# Markup that a formant synthesiser reads out as symbol names ("asterisk"): emphasis, code, tables.
_UNSPOKEN = re.compile(r"[*_#~^|<>`]+")


def spoken_form(text: str) -> str:
    """The text a TTS engine should say: markup symbols dropped, whitespace collapsed."""
    return " ".join(_UNSPOKEN.sub(" ", text).split())


class SynthesisError(RuntimeError):
    """A span the backend could not speak."""


class TTSBackend(Protocol):
    name: str

    def synthesize(self, texts: list[str], voice: str) -> list[np.ndarray]:
        """One 16 kHz mono float32 waveform per text, spoken by ``voice``."""
        ...


def build_tts(config: TTSConfig, device: str = "cpu") -> TTSBackend:
    """The backend the config names (heavy imports happen here, inside the process that speaks)."""
    if config.backend == TTSBackendKind.ESPEAK_NG:
        from salad_ray.tts.espeak import EspeakTTS

        return EspeakTTS(speed=config.speed, pitch=config.pitch, max_seconds=config.max_seconds)
    from salad_ray.tts.kokoro import KokoroTTS

    return KokoroTTS(config.kokoro_model, device=device, max_seconds=config.max_seconds)
