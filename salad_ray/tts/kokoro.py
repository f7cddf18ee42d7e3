"""Kokoro-82M (StyleTTS2-style neural TTS, 24 kHz), the paper's synthesiser; GPU when present.

The model is a :class:`~salad_ray.config.ModelRef`: a hub id (``hexgrad/Kokoro-82M``) or a local
directory holding ``config.json``, one ``*.pth`` state dict and ``voices/<name>.pt`` style packs.
A voice is a name found under ``voices/`` (``af_heart``, the paper's) or a path to a ``.pt`` file.
English G2P is misaki's (spaCy's en_core_web_sm, with espeak-ng for unknown words). Output is
resampled to 16 kHz.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from salad_ray.assets import resolve
from salad_ray.audio import AudioError, resample, validate
from salad_ray.config import ModelRef
from salad_ray.tts.base import SynthesisError

KOKORO_RATE = 24_000


class KokoroTTS:
    name = "kokoro"

    def __init__(self, model: ModelRef | str, device: str | None = None, max_seconds: float = 60.0):
        from kokoro import KModel, KPipeline

        root = resolve(model)
        weights = sorted(root.glob("*.pth"))
        if not (root / "config.json").is_file() or not weights:
            raise FileNotFoundError(
                f"{root}: a Kokoro model directory needs config.json and a .pth state dict"
            )
        self.root = root
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = json.loads((root / "config.json").read_text())
        kmodel = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(weights[0]))
        self.model = kmodel.to(self.device).eval()
        # lang_code "a": American English G2P; the model is passed in, so nothing is downloaded.
        self.pipeline = KPipeline(lang_code="a", repo_id="hexgrad/Kokoro-82M", model=self.model)
        self.max_seconds = max_seconds

    def voice_path(self, voice: str) -> Path:
        path = Path(voice) if voice.endswith(".pt") else self.root / "voices" / f"{voice}.pt"
        if not path.is_file():
            available = sorted(p.stem for p in (self.root / "voices").glob("*.pt"))
            raise SynthesisError(
                f"Kokoro voice {voice!r} not found (available: {', '.join(available) or 'none'})"
            )
        return path

    def synthesize(self, texts: list[str], voice: str) -> list[np.ndarray]:
        style = str(self.voice_path(voice))
        return [self._speak(text, style, voice) for text in texts]

    @torch.no_grad()
    def _speak(self, text: str, style: str, voice: str) -> np.ndarray:
        if not text.strip():
            raise SynthesisError("cannot speak an empty span")
        pieces = [
            r.audio for r in self.pipeline(text, voice=style, split_pattern=None) if r.audio is not None
        ]
        if not pieces:
            raise SynthesisError(f"Kokoro (voice {voice!r}) produced no audio for {text[:60]!r}")
        wave = resample(torch.cat(pieces).float().cpu().numpy(), KOKORO_RATE)
        try:
            validate(wave, 16_000, f"Kokoro output for {text[:40]!r}", self.max_seconds)
        except AudioError as e:
            raise SynthesisError(str(e)) from e
        return wave
