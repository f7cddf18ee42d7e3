"""Shared fixtures: real small models from the offline assets, espeak-ng speech, configs."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import pytest

from salad_ray.config import load_config


@pytest.fixture(scope="session")
def local_config():
    return load_config("local")


@pytest.fixture(scope="session")
def smoke_config():
    return load_config("smoke")


@pytest.fixture(scope="session")
def smollm_path():
    from salad_ray.assets import resolve

    return resolve("asset:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tokenizer(smollm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_path)


@pytest.fixture(scope="session")
def espeak():
    from salad_ray.tts.espeak import EspeakTTS

    return EspeakTTS()


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the session (logical CPUs above the 2 real ones let actors co-exist)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(autouse=True, scope="module")
def _release_serve():
    """Each module's teacher deployments go when the module ends: their CPUs are the next module's."""
    yield
    import ray

    if ray.is_initialized():
        from ray import serve

        serve.shutdown()
