"""Frozen speech encoders: 16 kHz audio spans in, one (frames, dim) feature matrix per span out.

Each encoder encodes a span on its own terms (its padding depends only on its own length), so the
features of a span never depend on what else is in the batch: training, scoring and evaluation see
the same frames for the same audio.

* ``whisper-ct2``: Whisper's encoder in CTranslate2 (the offline whisper-tiny). Audio is zero-padded
  to a whole second, log-mel'd as Whisper does, batched with spans of the same padded length, and
  the output trimmed to ceil(mel_frames / 2) frames (50 Hz). Spans up to 30 s.
* ``whisper``: the transformers Whisper encoder. It only accepts its full window
  (2 * max_source_positions mel frames, 30 s for released checkpoints), so every span is padded to
  it, as Whisper was trained, and the output trimmed to ceil(mel_frames / 2) frames.
* ``mimi``: the transformers Mimi codec's encoder up to the continuous latent before quantisation
  (12.5 Hz for kyutai/mimi). Mimi is causal, so right padding leaves the real frames unchanged.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from salad_ray.assets import ENCODER_FAMILY, resolve
from salad_ray.audio import HOP, SAMPLE_RATE, AudioError, log_mel, mel_frames, resample
from salad_ray.config import EncoderConfig, EncoderKind


class SpeechEncoder(Protocol):
    dim: int
    max_samples: int

    def frames(self, num_samples: int) -> int:
        """Frames emitted for a span of ``num_samples`` samples at 16 kHz."""
        ...

    def encode(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        """(frames(len(w)), dim) float32 features per span, on the encoder's device, without grad."""
        ...

    def to(self, device: torch.device | str) -> SpeechEncoder: ...


def _check_lengths(waves: list[np.ndarray], max_samples: int, kind: str) -> None:
    for k, w in enumerate(waves):
        if len(w) == 0:
            raise AudioError(f"speech span {k} is empty")
        if len(w) > max_samples:
            raise AudioError(
                f"speech span {k} is {len(w) / SAMPLE_RATE:.1f} s; the {kind} encoder takes at most "
                f"{max_samples / SAMPLE_RATE:.0f} s per span"
            )


def _whisper_frames(num_samples: int) -> int:
    # conv1 (stride 1) then conv2 (kernel 3, stride 2, padding 1): ceil(T / 2)
    return math.ceil(mel_frames(num_samples) / 2)


class WhisperCT2Encoder:
    """Whisper's encoder run by CTranslate2 (no torch weights, no gradients)."""

    bucket_samples = SAMPLE_RATE  # pad each span to a whole second

    def __init__(self, path: Path, threads: int = 0):
        import ctranslate2

        self._path, self._threads = path, threads
        self._model = ctranslate2.models.Whisper(
            str(path), device="cpu", compute_type="float32", intra_threads=threads
        )
        self.n_mels = self._model.n_mels
        self.dim = int(self._encode_batch(np.zeros((1, self.n_mels, 2), dtype=np.float32)).shape[-1])
        self.max_samples = 30 * SAMPLE_RATE
        self.device = torch.device("cpu")

    def _encode_batch(self, mels: np.ndarray) -> np.ndarray:
        import ctranslate2

        return np.asarray(self._model.encode(ctranslate2.StorageView.from_array(mels)))

    def frames(self, num_samples: int) -> int:
        return _whisper_frames(num_samples)

    def encode(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        _check_lengths(waves, self.max_samples, "whisper-ct2")
        padded_len = [
            min(-(-len(w) // self.bucket_samples) * self.bucket_samples, self.max_samples) for w in waves
        ]
        out: list[torch.Tensor | None] = [None] * len(waves)
        for length in sorted(set(padded_len)):
            group = [k for k, n in enumerate(padded_len) if n == length]
            mels = np.stack(
                [log_mel(np.pad(waves[k], (0, length - len(waves[k]))), self.n_mels).numpy() for k in group]
            )
            feats = self._encode_batch(np.ascontiguousarray(mels, dtype=np.float32))
            for row, k in enumerate(group):
                out[k] = torch.from_numpy(feats[row, : self.frames(len(waves[k]))].copy()).to(self.device)
        return out  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> WhisperCT2Encoder:
        self.device = torch.device(device)  # features are moved; CTranslate2 itself stays on the CPU
        return self


class HFWhisperEncoder:
    """The encoder of a transformers Whisper checkpoint, frozen."""

    def __init__(self, path: Path):
        from transformers import WhisperModel

        model = WhisperModel.from_pretrained(path)
        self.module = model.get_encoder().eval().requires_grad_(False)
        config = model.config
        self.n_mels = config.num_mel_bins
        self.window = 2 * config.max_source_positions  # mel frames the encoder insists on
        self.max_samples = self.window * HOP
        self.dim = config.d_model

    def frames(self, num_samples: int) -> int:
        return _whisper_frames(num_samples)

    @torch.no_grad()
    def encode(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        _check_lengths(waves, self.max_samples, "whisper")
        device = next(self.module.parameters()).device
        dtype = next(self.module.parameters()).dtype
        mels = torch.stack([log_mel(np.pad(w, (0, self.max_samples - len(w))), self.n_mels) for w in waves])
        hidden = self.module(mels.to(device, dtype)).last_hidden_state  # (B, window / 2, dim)
        return [hidden[k, : self.frames(len(w))].float() for k, w in enumerate(waves)]

    def to(self, device: torch.device | str) -> HFWhisperEncoder:
        self.module.to(device)
        return self


class MimiEncoder:
    """Mimi's encoder, transformer and downsampling: the continuous latent before the quantiser.

    Each span is resampled to Mimi's rate and zero-padded to a whole number of frames, so its last
    frame never depends on the padding mode of a partial window nor on what follows in a batch.
    """

    def __init__(self, path: Path):
        from transformers import MimiModel

        self.model = MimiModel.from_pretrained(path).eval().requires_grad_(False)
        config = self.model.config
        self.rate = config.sampling_rate
        self.hop = round(config.sampling_rate / config.frame_rate)  # samples per output frame
        self.dim = config.hidden_size
        self.max_samples = 120 * SAMPLE_RATE

    def frames(self, num_samples: int) -> int:
        return math.ceil(math.ceil(num_samples * self.rate / SAMPLE_RATE) / self.hop)

    @torch.no_grad()
    def encode(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        _check_lengths(waves, self.max_samples, "mimi")
        device = next(self.model.parameters()).device
        native = [resample(w, SAMPLE_RATE, self.rate) for w in waves]
        longest = max(self.frames(len(w)) for w in waves) * self.hop
        batch = torch.stack([torch.from_numpy(np.pad(w, (0, longest - len(w)))) for w in native])[:, None]
        x = self.model.encoder(batch.to(device))  # (B, hidden, T_enc)
        x = self.model.encoder_transformer(x.transpose(1, 2), return_dict=True).last_hidden_state.transpose(
            1, 2
        )
        x = self.model.downsample(x)  # (B, hidden, T) at the frame rate
        return [x[k, :, : self.frames(len(w))].T.float() for k, w in enumerate(waves)]

    def to(self, device: torch.device | str) -> MimiEncoder:
        self.model.to(device)
        return self


class CachedEncoder:
    """A frozen encoder whose features are memoised by the audio's bytes (least recently used out
    first, at most ``max_bytes`` of features). Every encoder above encodes a span on its own terms,
    so a cached span's features are exactly what encoding it again would give."""

    def __init__(self, inner: SpeechEncoder, max_bytes: int):
        self.inner, self.max_bytes = inner, max_bytes
        self.dim, self.max_samples = inner.dim, inner.max_samples
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def frames(self, num_samples: int) -> int:
        return self.inner.frames(num_samples)

    def encode(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        keys = [hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).digest() for w in waves]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            for key, feats in zip(
                missing, self.inner.encode([waves[first[k]] for k in missing]), strict=True
            ):
                self._cache[key] = feats
                self._bytes += feats.numel() * feats.element_size()
        out = []
        for key in keys:
            self._cache.move_to_end(key)
            out.append(self._cache[key])
        while self._bytes > self.max_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        return out

    def to(self, device: torch.device | str) -> CachedEncoder:
        self.inner.to(device)
        self._cache.clear()
        self._bytes = 0
        return self


def build_encoder(config: EncoderConfig) -> SpeechEncoder:
    """The frozen encoder named by the config (memoised when ``config.cache_mib`` > 0)."""
    path = resolve(config.model, ENCODER_FAMILY[config.kind])
    if config.kind == EncoderKind.WHISPER_CT2:
        encoder: SpeechEncoder = WhisperCT2Encoder(path)
    elif config.kind == EncoderKind.WHISPER:
        encoder = HFWhisperEncoder(path)
    else:
        encoder = MimiEncoder(path)
    return CachedEncoder(encoder, config.cache_mib << 20) if config.cache_mib else encoder
