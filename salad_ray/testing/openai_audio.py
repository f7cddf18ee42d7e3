"""Audio in OpenAI chat messages, as the serving tests send it: encoded files, ``input_audio`` parts."""

from __future__ import annotations

import base64
import io

import numpy as np
import soundfile as sf


def encode(wave: np.ndarray, rate: int = 16_000, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt)
    return buffer.getvalue()


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}
