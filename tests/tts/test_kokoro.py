"""Kokoro offline: the real architecture with random weights, a local voice, one word."""

import pytest
import torch

from salad_ray.audio import SAMPLE_RATE
from salad_ray.config import TTSConfig
from salad_ray.tts import build_tts
from salad_ray.tts.base import SynthesisError


@pytest.fixture(scope="module")
def kokoro_dir(tmp_path_factory, rehearsal_tool):
    """Kokoro-82M's architecture with seeded random weights and an af_heart pack (the rehearsal's)."""
    root = tmp_path_factory.mktemp("kokoro") / "kokoro"
    rehearsal_tool.build_kokoro(root, seed=0)
    return root


def test_kokoro_speaks_one_word_offline_with_random_weights(kokoro_dir):
    tts = build_tts(TTSConfig(backend="kokoro", kokoro_model={"source": str(kokoro_dir)}))
    assert tts.name == "kokoro"
    (wave,) = tts.synthesize(["hello"], "af_heart")  # the paper's voice name, here a local pack
    assert wave.dtype.name == "float32" and wave.ndim == 1
    assert 0.05 * SAMPLE_RATE < len(wave) < 30 * SAMPLE_RATE
    assert torch.isfinite(torch.from_numpy(wave)).all() and abs(wave).max() > 0
    with pytest.raises(SynthesisError, match="voice 'nobody' not found"):
        tts.synthesize(["hello"], "nobody")
