"""The TTS interface: text spans in, 16 kHz mono float32 audio per span out, with the voice recorded.

Synthesising each word span on its own gives, by construction, the span alignment that
interleaving needs (no forced alignment). A backend raises :class:`SynthesisError` naming the span
when it cannot speak it; the pipeline quarantines that record and carries on.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np

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
