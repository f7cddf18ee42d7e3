"""Helpers of the serving tests: encoded audio, OpenAI audio parts."""

from __future__ import annotations

import base64
import io

import numpy as np
import soundfile as sf

# Two utterances of different content: an audio-dependent student answers them differently.
SENTENCES = {
    "weather": "The weather is cold and wet today.",
    "numbers": "Seven hundred and twelve green bottles.",
}


def encode(wave: np.ndarray, rate: int = 16_000, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt)
    return buffer.getvalue()


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}
