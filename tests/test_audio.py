import numpy as np
import pytest
import soundfile as sf

from salad_ray.audio import (
    SAMPLE_RATE,
    AudioError,
    encode_flac,
    log_mel,
    mel_frames,
    read_audio,
    resample,
    write_audio,
)


def tone(seconds=1.0, rate=SAMPLE_RATE, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_read_round_trip(tmp_path, suffix):
    wave = tone()
    path = tmp_path / f"a{suffix}"
    write_audio(path, wave)
    back = read_audio(path)
    assert back.dtype == np.float32 and back.shape == wave.shape
    assert np.abs(back - wave).max() < 1e-3  # 16-bit PCM


def test_flac_bytes_round_trip():
    wave = tone(0.5)
    assert np.abs(read_audio(encode_flac(wave)) - wave).max() < 1e-3


def test_read_resamples_and_mixes_to_mono(tmp_path):
    stereo = np.stack([tone(1.0, 22_050), tone(1.0, 22_050)], axis=1)
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 22_050)
    wave = read_audio(path)
    assert wave.ndim == 1 and abs(len(wave) - SAMPLE_RATE) <= 1
    # a 440 Hz tone stays at 440 Hz after resampling
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(wave) - 440) < 2


def test_resample_identity_and_length():
    wave = tone()
    assert resample(wave, SAMPLE_RATE, SAMPLE_RATE) is not None
    assert len(resample(wave, SAMPLE_RATE, 24_000)) == 24_000


@pytest.mark.parametrize("orig,target", [(22_050, 16_000), (24_000, 16_000), (16_000, 24_000)])
@pytest.mark.parametrize("samples", [1, 22_049, 22_050, 22_051, 70_001])
def test_resample_padded_to_whole_seconds_is_torchaudios_resampling(orig, target, samples):
    """The padding that keeps oneDNN's plans few changes neither the length nor the samples."""
    import torch
    import torchaudio.functional as AF

    wave = np.random.default_rng(samples).standard_normal(samples).astype(np.float32) * 0.1
    ours = resample(wave, orig, target)
    plain = AF.resample(torch.from_numpy(wave), orig, target).numpy()
    assert ours.shape == plain.shape
    np.testing.assert_allclose(ours, plain, atol=1e-5)


def test_resampling_inside_a_bf16_autocast_stays_float32():
    """An encoder forward in bf16 autocast (salad_ray.precision) resamples its input first."""
    import torch

    wave = tone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = resample(wave, SAMPLE_RATE, 24_000)
    assert inside.dtype == np.float32
    np.testing.assert_array_equal(inside, resample(wave, SAMPLE_RATE, 24_000))


def test_log_mel_matches_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    wave = (tone(2.0) + 0.05 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
    ours = log_mel(wave).numpy()
    assert ours.shape == (80, mel_frames(len(wave))) == (80, 200)
    theirs = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=SAMPLE_RATE, return_tensors="np")
    theirs = theirs["input_features"][0, :, :200]
    # The reference pads to 30 s with zeros; only the last frames (window over the edge) may differ.
    np.testing.assert_allclose(ours[:, :-2], theirs[:, :-2], atol=2e-3)


def test_unreadable_empty_nan_and_absurd_audio(tmp_path):
    with pytest.raises(AudioError, match="unreadable"):
        read_audio(b"definitely not audio", name="junk.wav")
    with pytest.raises(AudioError, match=r"missing\.wav: unreadable"):
        read_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="empty"):
        read_audio(empty)
    nan = tmp_path / "nan.wav"
    wave = tone()
    wave[10:20] = np.nan
    sf.write(nan, wave, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="10 of 16000 samples are NaN"):
        read_audio(nan)
    long = tmp_path / "long.flac"
    sf.write(long, np.zeros(SAMPLE_RATE * 5, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="longer than the 2 s limit"):
        read_audio(long, max_seconds=2)
    with pytest.raises(AudioError, match="unsupported extension"):
        write_audio(tmp_path / "a.mp3", tone())
