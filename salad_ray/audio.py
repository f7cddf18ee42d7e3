"""Audio in and out: files and bytes through soundfile, resampling and log-mel through torchaudio.

Everything inside salad-ray is float32 mono at :data:`SAMPLE_RATE` (16 kHz) in [-1, 1]. Inputs are
validated on the way in; a bad one raises :class:`AudioError` naming the input and what is wrong.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SAMPLE_RATE = 16_000
DEFAULT_MAX_SECONDS = 120.0
FORMATS = {".wav": "WAV", ".flac": "FLAC"}


class AudioError(ValueError):
    """Audio that cannot be used; the message names the input."""


def validate(wave: np.ndarray, sample_rate: int, name: str, max_seconds: float = DEFAULT_MAX_SECONDS) -> None:
    """Reject audio that is not mono, empty, non-finite, or absurdly long."""
    if wave.ndim != 1:
        raise AudioError(f"{name}: expected mono audio (1-D), got shape {tuple(wave.shape)}")
    if wave.size == 0:
        raise AudioError(f"{name}: audio is empty")
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError(f"{name}: {bad} of {wave.size} samples are NaN or infinite")
    seconds = wave.size / sample_rate
    if seconds > max_seconds:
        raise AudioError(f"{name}: {seconds:.1f} s is longer than the {max_seconds:.0f} s limit")


def to_mono(wave: np.ndarray) -> np.ndarray:
    """(samples,) or (samples, channels) -> (samples,) float32, channels averaged."""
    wave = np.asarray(wave, dtype=np.float32)
    return wave.mean(axis=1) if wave.ndim == 2 else wave


@lru_cache(maxsize=8)
def _resampler(orig_rate: int, target_rate: int):
    """torchaudio's windowed-sinc resampler for one rate pair, its kernel built once: building it
    costs about ten times applying it to a few seconds of speech (22.05 -> 16 kHz)."""
    import torchaudio.transforms as T

    return T.Resample(orig_rate, target_rate)


def resample(wave: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited (sinc) resampling of a mono signal, in float32 whatever autocast the caller
    runs in (an encoder's bf16 forward resamples its input first).

    The input is zero-padded to whole seconds and the output cut back to ceil(n · target / orig)
    samples, which is exactly the unpadded result (the resampler pads with zeros itself): oneDNN
    plans its convolution once per input length, and planning costs about twice the convolution of
    a few seconds of speech, so whole seconds keep the plans few and reused.
    """
    if orig_rate == target_rate:
        return np.asarray(wave, dtype=np.float32)
    n = len(wave)
    padded = np.zeros(-(-n // orig_rate) * orig_rate, dtype=np.float32)
    padded[:n] = wave
    with torch.autocast("cpu", enabled=False), torch.no_grad():
        out = _resampler(orig_rate, target_rate)(torch.from_numpy(padded))
    return out[: -(-n * target_rate // orig_rate)].numpy()  # ceil, in integers


def read_audio(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> np.ndarray:
    """Decode a file path or encoded bytes (wav, flac, ogg...) to validated mono float32 at ``sample_rate``."""
    label = name or (f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source))
    try:
        wave, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32")
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as e:
        raise AudioError(f"{label}: unreadable audio ({e})") from None
    wave = to_mono(wave)
    # Check length before resampling so an absurd input is refused without the work.
    validate(wave, rate, label, max_seconds)
    wave = resample(wave, rate, sample_rate)
    validate(wave, sample_rate, label, max_seconds)
    return wave


def write_audio(path: str | Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise AudioError(f"{path}: unsupported extension; use one of {', '.join(FORMATS)}")
    sf.write(path, wave, sample_rate, format=FORMATS[path.suffix.lower()], subtype="PCM_16")


def encode_flac(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Lossless 16-bit FLAC bytes (the shard format); values are clipped to [-1, 1]."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------- features

N_FFT = 400  # 25 ms window at 16 kHz
HOP = 160  # 10 ms hop: 100 mel frames per second


@lru_cache(maxsize=4)
def _mel_transform(n_mels: int):
    import torchaudio.transforms as T

    return T.MelSpectrogram(
        sample_rate=SAMPLE_RATE,
        n_fft=N_FFT,
        hop_length=HOP,
        n_mels=n_mels,
        f_min=0.0,
        f_max=SAMPLE_RATE / 2,
        power=2.0,
        norm="slaney",
        mel_scale="slaney",
        center=True,
    )


def mel_frames(num_samples: int) -> int:
    """Frames :func:`log_mel` returns for ``num_samples`` samples (the centred STFT's last is dropped)."""
    return num_samples // HOP


def log_mel(wave: np.ndarray | torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel features of one 16 kHz signal: (n_mels, mel_frames(len(wave))).

    power spectrogram (Hann 400 / hop 160) -> Slaney mel filterbank -> log10(max(x, 1e-10)),
    floored at (max - 8), then (x + 4) / 4, exactly the normalisation Whisper was trained with.
    Always float32, also inside a bf16 autocast region (the encoders are frozen and run in fp32).
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        spec = _mel_transform(n_mels)(x)[..., :-1]  # (n_mels, frames)
    logspec = torch.clamp(spec, min=1e-10).log10()
    logspec = torch.maximum(logspec, logspec.max() - 8.0)
    return (logspec + 4.0) / 4.0
