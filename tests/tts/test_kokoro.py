"""Kokoro offline: the real architecture with random weights, a local voice, one word."""

import json
import string

import pytest
import torch

from salad_ray.audio import SAMPLE_RATE
from salad_ray.config import TTSConfig
from salad_ray.tts.base import SynthesisError, build_tts

# Kokoro-82M's architecture (hexgrad/Kokoro-82M config.json) with a phoneme vocabulary of our own:
# the weights are random, so any consistent symbol table will do.
SYMBOLS = list(';:,.!?—…"()“” ') + list(string.ascii_letters) + list("ˈˌːəɪʊɛæɑɔʌɜθðʃʒŋɹɾʔɐɒɚɝᵻʤʧ")
CONFIG = {
    "istftnet": {
        "upsample_kernel_sizes": [20, 12],
        "upsample_rates": [10, 6],
        "gen_istft_hop_size": 5,
        "gen_istft_n_fft": 20,
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "resblock_kernel_sizes": [3, 7, 11],
        "upsample_initial_channel": 512,
    },
    "dim_in": 64,
    "dropout": 0.2,
    "hidden_dim": 512,
    "max_conv_dim": 512,
    "max_dur": 50,
    "multispeaker": True,
    "n_layer": 3,
    "n_mels": 80,
    "n_token": 178,
    "style_dim": 128,
    "text_encoder_kernel_size": 5,
    "plbert": {
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 2048,
        "max_position_embeddings": 512,
        "num_hidden_layers": 12,
        "dropout": 0.1,
    },
    "vocab": {s: i + 1 for i, s in enumerate(dict.fromkeys(SYMBOLS))},
}


@pytest.fixture(scope="module")
def kokoro_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("kokoro")
    (root / "config.json").write_text(json.dumps(CONFIG))
    torch.save({}, root / "kokoro-random.pth")  # an empty state dict: every weight stays random
    (root / "voices").mkdir()
    torch.manual_seed(0)
    torch.save(0.1 * torch.randn(510, 1, 256), root / "voices" / "af_heart.pt")
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
