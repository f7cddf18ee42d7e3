"""What the serving tests share: a saved untrained student, spoken utterances, a served student."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from salad_ray.config import load_config
from salad_ray.testing.processes import free_port

# Two utterances of different content: an audio-dependent student answers them differently.
SENTENCES = {
    "weather": "The weather is cold and wet today.",
    "numbers": "Seven hundred and twelve green bottles.",
}


@pytest.fixture(scope="session")
def student_dir(smoke_config, local_config, tmp_path_factory):
    """An untrained student saved as a run saves one: the smoke preset's tiny random LLM and adapter
    on the local preset's whisper-tiny (the smoke preset's random Whisper barely tells utterances apart)."""
    from salad_ray.model.student import SpeechLM

    models = smoke_config.models.model_copy(update={"encoder": local_config.models.encoder})
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("serve") / "smoke-student"
    SpeechLM.from_config(models).save(path)
    return path


@pytest.fixture(scope="session")
def utterances(espeak) -> dict[str, np.ndarray]:
    """16 kHz mono espeak-ng speech of each of SENTENCES."""
    return {name: espeak.synthesize([text], "en-us")[0] for name, text in SENTENCES.items()}


@pytest.fixture(scope="session")
def wav_files(utterances, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("wav")
    out = {}
    for name, wave in utterances.items():
        out[name] = str(folder / f"{name}.wav")
        sf.write(out[name], wave, 16_000)
    return out


@pytest.fixture(scope="module")
def served(ray_cluster, student_dir):
    """The student served on a fresh port (Serve's HTTP options are fixed when Serve starts): the
    base URL and the configuration it was deployed with."""
    from ray import serve

    from salad_ray.serve.deployment import deploy_student

    serve.shutdown()
    config = load_config(
        "smoke",
        overrides=[
            f"student_server.http_port={free_port()}",
            "student_server.max_audio_seconds=12",
            "student_server.batch_wait_timeout_s=0.2",  # concurrent test requests share batches
        ],
    )
    deploy_student(config, student_dir)
    return f"http://127.0.0.1:{config.student_server.http_port}", config
