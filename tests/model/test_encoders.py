"""Frozen encoders: frame counts, and a span's features never depend on its batch-mates."""

import numpy as np
import pytest
import torch

from salad_ray.assets import resolve
from salad_ray.audio import SAMPLE_RATE, AudioError
from salad_ray.config import EncoderConfig, EncoderKind, ModelRef
from salad_ray.model.encoders import HFWhisperEncoder, MimiEncoder, WhisperCT2Encoder, build_encoder


def spans(rng, lengths):
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def check_encoder(encoder, waves):
    batch = encoder.encode(waves)
    for wave, feats in zip(waves, batch, strict=True):
        assert feats.shape == (encoder.frames(len(wave)), encoder.dim)
        alone = encoder.encode([wave])[0]
        torch.testing.assert_close(alone, feats, atol=1e-4, rtol=1e-4)


def test_whisper_ct2_real_encoder(espeak):
    encoder = WhisperCT2Encoder(resolve("asset:whisper-tiny-ct2"))
    assert encoder.dim == 384  # whisper-tiny
    waves = espeak.synthesize(["a short one", "a somewhat longer sentence spoken by the machine"], "en-us")
    waves.append(waves[0][: SAMPLE_RATE // 3])
    check_encoder(encoder, waves)
    assert encoder.frames(SAMPLE_RATE) == 50  # 50 Hz
    with pytest.raises(AudioError, match="at most 30 s"):
        encoder.encode([np.zeros(31 * SAMPLE_RATE, dtype=np.float32)])
    with pytest.raises(AudioError, match="empty"):
        encoder.encode([np.zeros(0, dtype=np.float32)])


def test_transformers_whisper_random_tiny(smoke_config):
    encoder = build_encoder(smoke_config.models.encoder)
    assert isinstance(encoder.inner, HFWhisperEncoder) and encoder.dim == 64
    check_encoder(encoder, spans(np.random.default_rng(0), [16_000, 5_000, 23_456]))
    assert not any(p.requires_grad for p in encoder.inner.module.parameters())


def test_mimi_random_tiny():
    overrides = {
        "hidden_size": 32,
        "num_filters": 4,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "head_dim": 16,
        "codebook_dim": 32,
        "num_quantizers": 2,
        "num_semantic_quantizers": 1,
        "codebook_size": 16,
        "upsample_groups": 32,
    }
    config = EncoderConfig(
        kind=EncoderKind.MIMI, model=ModelRef(random_init=True, overrides=overrides), stack=1
    )
    encoder = build_encoder(config)
    assert isinstance(encoder.inner, MimiEncoder)
    assert encoder.frames(SAMPLE_RATE) == 13  # 12.5 Hz, a partial last frame counts
    check_encoder(encoder, spans(np.random.default_rng(1), [16_000, 8_000, 12_345]))


def test_cached_encoder_gives_the_same_features_and_encodes_each_span_once(smoke_config):
    from salad_ray.model.encoders import CachedEncoder

    encoder = build_encoder(smoke_config.models.encoder)
    assert isinstance(encoder, CachedEncoder)
    waves = spans(np.random.default_rng(2), [16_000, 8_000])
    calls = []
    inner_encode = encoder.inner.encode
    encoder.inner.encode = lambda w: calls.append(len(w)) or inner_encode(w)
    first = encoder.encode([waves[0], waves[1], waves[0]])
    again = encoder.encode(waves)
    assert calls == [2]  # the repeated span and the second call come from the cache
    for a, b in zip([*again, first[0]], [*inner_encode(waves), first[2]], strict=True):
        torch.testing.assert_close(a, b)
