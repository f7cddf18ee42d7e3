"""Text-to-speech backends behind one interface (base.py): espeak-ng (espeak.py) and Kokoro (kokoro.py)."""

from __future__ import annotations

from salad_ray.config import TTSBackendKind, TTSConfig
from salad_ray.tts.base import TTSBackend


def build_tts(config: TTSConfig, device: str = "cpu") -> TTSBackend:
    """The backend the config names (heavy imports happen here, inside the process that speaks)."""
    if config.backend == TTSBackendKind.ESPEAK_NG:
        from salad_ray.tts.espeak import EspeakTTS

        return EspeakTTS(speed=config.speed, pitch=config.pitch, max_seconds=config.max_seconds)
    from salad_ray.tts.kokoro import KokoroTTS

    return KokoroTTS(config.kokoro_model, device=device, max_seconds=config.max_seconds)
