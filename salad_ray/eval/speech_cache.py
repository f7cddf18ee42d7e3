"""The speech of an evaluation, computed once: audio and transcripts on disk, encoder features in memory.

A benchmark speaks the same text many times: an item's context is also the few-shot example of
other items, and every system, control and rerun hears the same pieces. :class:`SpeechCache` keeps
one waveform and one transcript per distinct spoken piece, content-addressed in a directory (the
run's ``eval/cache``), so a piece is synthesized and transcribed once per run, however often the
evaluation is repeated:

    audio/<key>.npy       key = hash(text, voice, TTS settings)
    transcripts.json      hash(audio key, ASR model, beam size) -> the raw Whisper transcript

Transcription runs in batches (``eval.asr_batch_size`` pieces per CTranslate2 call).
:class:`CachedEncoder` wraps a student's frozen speech encoder: the features of a waveform are the
same for every student, so each is computed once per evaluation (up to a memory budget).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from salad_ray.config import RunConfig
from salad_ray.files import atomic_path, write_text


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:24]


class SpeechCache:
    """Waveforms and transcripts of spoken pieces (module docstring); ``directory=None`` keeps them
    in memory only."""

    def __init__(self, config: RunConfig, directory: Path | None = None):
        self.config = config
        self.voice = config.eval.voice or config.tts.voices[0]
        self.directory = directory
        self._tts_settings = config.tts.model_dump(mode="json", exclude={"voices"})
        self._asr_settings = [config.models.asr.model_dump(mode="json"), config.eval.asr_beam_size]
        self._audio: dict[str, np.ndarray] = {}
        self._transcripts: dict[str, str] = {}
        self.unspeakable: dict[str, str] = {}  # text -> why the TTS could not speak it
        if directory is not None:
            (directory / "audio").mkdir(parents=True, exist_ok=True)
            index = directory / "transcripts.json"
            if index.is_file():
                self._transcripts = json.loads(index.read_text())

    def audio_key(self, text: str) -> str:
        return _key("audio", text, self.voice, self._tts_settings)

    def _transcript_key(self, text: str) -> str:
        return _key("asr", self.audio_key(text), self._asr_settings)

    def _load_audio(self, key: str) -> np.ndarray | None:
        if key in self._audio:
            return self._audio[key]
        if self.directory is not None:
            path = self.directory / "audio" / f"{key}.npy"
            if path.is_file():
                self._audio[key] = np.load(path)
                return self._audio[key]
        return None

    def _store_audio(self, key: str, wave: np.ndarray) -> None:
        self._audio[key] = wave
        if self.directory is not None:
            with atomic_path(self.directory / "audio" / f"{key}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, wave)

    def speak(self, texts: list[str], batch_size: int = 16) -> dict[str, np.ndarray]:
        """The waveform of every distinct text, synthesizing only those not cached. A text the TTS
        cannot speak (:class:`SynthesisError`) is left out and its reason kept in ``unspeakable``."""
        from salad_ray.tts.base import SynthesisError

        distinct = list(dict.fromkeys(texts))
        missing = [
            t for t in distinct if t not in self.unspeakable and self._load_audio(self.audio_key(t)) is None
        ]
        if missing:
            from salad_ray.tts import build_tts

            tts = build_tts(self.config.tts, device="cuda" if torch.cuda.is_available() else "cpu")
            for start in tqdm(
                range(0, len(missing), batch_size), desc="speak benchmark pieces", unit="batch"
            ):
                chunk = missing[start : start + batch_size]
                try:
                    spoken = list(zip(chunk, tts.synthesize(chunk, self.voice), strict=True))
                except SynthesisError:  # one bad text fails its batch: speak them one by one
                    spoken = []
                    for text in chunk:
                        try:
                            spoken += [(text, tts.synthesize([text], self.voice)[0])]
                        except SynthesisError as e:
                            self.unspeakable[text] = str(e)
                for text, wave in spoken:
                    self._store_audio(self.audio_key(text), np.asarray(wave, dtype=np.float32))
        return {t: self._load_audio(self.audio_key(t)) for t in distinct if t not in self.unspeakable}  # type: ignore[misc]

    def transcribe(self, texts: list[str], batch_size: int = 16) -> dict[str, str]:
        """Whisper's raw transcript of every distinct text's waveform, transcribing only new ones."""
        distinct = list(dict.fromkeys(texts))
        missing = [t for t in distinct if self._transcript_key(t) not in self._transcripts]
        if missing:
            from salad_ray.asr import WhisperASR
            from salad_ray.assets import resolve

            audio = self.speak(missing)
            asr = WhisperASR(resolve(self.config.models.asr), beam_size=self.config.eval.asr_beam_size)
            for start in tqdm(range(0, len(missing), batch_size), desc="transcribe (cascade)", unit="batch"):
                chunk = missing[start : start + batch_size]
                for text, heard in zip(chunk, asr.transcribe([audio[t] for t in chunk]), strict=True):
                    self._transcripts[self._transcript_key(text)] = heard
                self._save_transcripts()
        return {t: self._transcripts[self._transcript_key(t)] for t in distinct}

    def _save_transcripts(self) -> None:
        if self.directory is None:
            return
        write_text(
            self.directory / "transcripts.json", json.dumps(self._transcripts, indent=0, sort_keys=True)
        )


FEATURE_BUDGET_BYTES = 2 << 30  # encoder features kept per evaluation


class CachedEncoder:
    """A frozen speech encoder whose features are computed once per distinct waveform.

    Waveforms are recognised by a hash of their samples; features beyond ``budget_bytes`` are
    computed and not kept. Everything else (``frames``, ``dim``, ...) is the wrapped encoder's.
    """

    def __init__(self, encoder, budget_bytes: int = FEATURE_BUDGET_BYTES):
        self.inner = encoder
        self.budget_bytes = budget_bytes
        self._features: dict[str, torch.Tensor] = {}
        self._bytes = 0
        self.hits = self.misses = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    @staticmethod
    def _id(wave: np.ndarray) -> str:
        data = np.ascontiguousarray(wave)
        return hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest() + f":{data.dtype}:{len(data)}"

    def encode(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        keys = [self._id(w) for w in waves]
        todo = list(dict.fromkeys(k for k in keys if k not in self._features))
        self.hits += len(waves) - len(todo)
        self.misses += len(todo)
        fresh: dict[str, torch.Tensor] = {}
        if todo:
            first = {k: n for n, k in reversed(list(enumerate(keys)))}
            for k, feats in zip(todo, self.inner.encode([waves[first[k]] for k in todo]), strict=True):
                fresh[k] = feats
                size = feats.numel() * feats.element_size()
                if self._bytes + size <= self.budget_bytes:
                    self._features[k] = feats
                    self._bytes += size
        return [self._features.get(k, fresh.get(k)) for k in keys]  # type: ignore[misc]

    def to(self, device: torch.device | str) -> CachedEncoder:
        self.inner = self.inner.to(device)
        self._features = {k: f.to(device) for k, f in self._features.items()}
        return self
