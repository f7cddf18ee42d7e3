"""The served student for real: Ray Serve on a local instance, the official `openai` client, streamed
and whole answers, audio that changes the answer, concurrent requests, bad requests, the
configuration's say over the deployment (`serve run services/student.yaml` as the README writes it:
tests/test_readme.py)."""

from __future__ import annotations

import json
import shlex
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest
import torch
import torchaudio.functional as AF

from salad_ray.audio import read_audio
from salad_ray.config import StudentServerConfig, load_config
from salad_ray.generation import SamplingParams
from salad_ray.serve import serve_command
from salad_ray.serve.deployment import build_app
from salad_ray.serve.engine import StudentEngine
from salad_ray.serve.prompt import Turn
from salad_ray.testing.openai_audio import audio_part, encode

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
GREEDY = {"temperature": 0, "max_tokens": 16}


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    url, _ = served
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client) -> str:
    return client.models.list().data[0].id


@pytest.fixture(scope="module")
def reference(student_dir) -> StudentEngine:
    """The same saved student in-process: what the served answers are compared with."""
    return StudentEngine.load(student_dir, StudentServerConfig(), device="cpu")


def ask(client, model, content, **params):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **params
    )


def test_models_and_health(served, student_dir, client):
    url, _ = served
    (entry,) = client.models.list().data
    assert entry.id == student_dir.name and entry.owned_by == "salad-ray"
    with urllib.request.urlopen(f"{url}/health") as r:
        assert json.load(r)["status"] == "ok"


def test_text_answers_token_for_token_as_the_students_llm(client, model, reference):
    """The served path is the real model: its greedy answer to text is the LLM's own greedy answer."""
    tokenizer, llm = reference.student.tokenizer, reference.student.llm
    messages = [{"role": "user", "content": "Where do rivers begin?"}]
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    ids = llm.generate(**encoded, do_sample=False, max_new_tokens=GREEDY["max_tokens"])[0]
    expected = ids[encoded["input_ids"].shape[1] :].tolist()
    answer = client.chat.completions.create(model=model, messages=messages, **GREEDY)
    assert answer.choices[0].message.content == tokenizer.decode(expected, skip_special_tokens=True)
    assert answer.usage.completion_tokens == len(expected)
    assert answer.usage.prompt_tokens == encoded["input_ids"].shape[1]
    assert answer.choices[0].finish_reason == ("stop" if expected[-1] == tokenizer.eos_token_id else "length")


def test_streamed_answer_is_the_whole_answer_in_pieces(client, model, utterances):
    content = [audio_part(encode(utterances["weather"])), {"type": "text", "text": "What did you hear?"}]
    whole = ask(client, model, content, **GREEDY)
    chunks = list(ask(client, model, content, stream=True, **GREEDY))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(pieces) == whole.choices[0].message.content
    assert len(pieces) > 1 or whole.usage.completion_tokens <= 1  # token by token
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert len({c.id for c in chunks}) == 1


def test_a_stop_string_ends_the_answer_before_it(client, model):
    full = ask(client, model, "Tell me a story.", **GREEDY).choices[0].message.content
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = ask(client, model, "Tell me a story.", stop=[stop, "never in it"], **GREEDY)
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    chunks = ask(client, model, "Tell me a story.", stop=stop, stream=True, **GREEDY)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full[: full.index(stop)]


def test_the_answer_depends_on_the_audio(client, model, utterances):
    answers = {
        name: ask(client, model, [audio_part(encode(wave))], **GREEDY).choices[0].message.content
        for name, wave in utterances.items()
    }
    assert answers["weather"] != answers["numbers"]
    # the same utterance at 44.1 kHz in stereo, as FLAC and as MP3: resampled and heard
    stereo = AF.resample(torch.from_numpy(np.stack([utterances["weather"]] * 2)), 16_000, 44_100).numpy().T
    nothing = ask(client, model, "", **GREEDY).usage.prompt_tokens  # the chat template alone
    for fmt in ("flac", "mp3"):
        answer = ask(client, model, [audio_part(encode(stereo, 44_100, fmt.upper()), fmt)], **GREEDY)
        assert answer.choices[0].message.content and answer.usage.prompt_tokens > nothing


def test_several_turns_with_audio_in_them(client, model, utterances):
    def conversation(heard: bool) -> list[dict]:
        def user(name: str, text: str) -> dict:
            audio = [audio_part(encode(utterances[name]))] if heard else []
            return {"role": "user", "content": [*audio, {"type": "text", "text": text}]}

        return [
            {"role": "developer", "content": "You are a listener."},
            user("weather", "What was that?"),
            {"role": "assistant", "content": "Something about the weather."},
            user("numbers", "And this?"),
        ]

    answer = client.chat.completions.create(
        model=model, messages=conversation(True), stop=["\n"], seed=1, **GREEDY
    )
    assert "\n" not in answer.choices[0].message.content
    unheard = client.chat.completions.create(model=model, messages=conversation(False), **GREEDY)
    assert answer.usage.prompt_tokens >= unheard.usage.prompt_tokens + 2  # both utterances were heard


def test_eight_concurrent_requests_are_all_answered(client, model, utterances):
    names = ["weather", "numbers"]
    requests = [
        [audio_part(encode(utterances[names[n // 2 % 2]]))] if n % 2 else f"Question {n}: what comes next?"
        for n in range(8)
    ]
    alone = [ask(client, model, content, **GREEDY).choices[0].message.content for content in requests[:2]]
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda c: ask(client, model, c, **GREEDY), requests))
    assert all(a.choices[0].message.content for a in answers)
    assert [a.choices[0].message.content for a in answers[:2]] == alone  # batched: the same answers


def bad_requests(model: str, utterances) -> list[tuple[dict, str]]:
    """(request body, the field the 400 must name)."""
    wave = utterances["weather"]
    text = {"type": "text", "text": "hi"}

    def one(part, **extra):
        return {"model": model, "messages": [{"role": "user", "content": [part]}], **extra}

    return [
        (
            one({"type": "input_audio", "input_audio": {"data": "not base64!", "format": "wav"}}),
            "messages[0].content[0].input_audio.data",
        ),
        (one(audio_part(b"RIFF but no audio at all")), "messages[0].content[0].input_audio.data"),
        (one(audio_part(encode(np.zeros(0, np.float32)))), "messages[0].content[0].input_audio.data"),
        (one(audio_part(encode(np.zeros(16_000, np.float32)))), "messages[0].content[0].input_audio.data"),
        (one(audio_part(encode(np.tile(wave, 8)))), "messages[0].content[0].input_audio.data"),  # > 12 s
        ({"model": model, "messages": []}, "messages"),
        (one({"type": "image_url", "image_url": {"url": "x"}}), "messages[0].content[0].type"),
        (one(text, max_tokens=100_000), "max_tokens"),
        (one(text, max_completion_tokens=100_000), "max_completion_tokens"),
        (one(text, temperature=3), "temperature"),
    ]


def test_bad_requests_get_400_naming_the_field_and_the_replica_keeps_serving(
    served, client, model, utterances
):
    from ray import serve

    url, config = served
    for body, field in bad_requests(model, utterances):
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request)
        error = json.loads(e.value.read())["error"]
        assert e.value.code == 400 and error["param"] == field, (field, error)
        assert error["message"].startswith(f"{field}: ")
    with pytest.raises(openai.BadRequestError, match="is silent"):  # the official client sees the same
        ask(client, model, [audio_part(encode(np.zeros(8000, np.float32)))])
    with pytest.raises(openai.NotFoundError):
        ask(client, "another-model", "hi")
    assert (
        ask(client, model, [audio_part(encode(utterances["numbers"]))], **GREEDY).choices[0].message.content
    )
    status = serve.status().applications[config.student_server.app_name].deployments["Student"]
    assert status.status == "HEALTHY" and status.replica_states.get("RUNNING") == 1


def test_the_same_engine_answers_in_process(reference, utterances, client, model):
    """The terminal command's path (StudentEngine, no Ray) and the served path give one answer to the
    same audio file (the float wave itself would differ from the file's 16-bit samples, and greedy
    answers of a small student part ways at such differences)."""
    data = encode(utterances["numbers"])
    params = SamplingParams(GREEDY["max_tokens"], temperature=0)
    turn = Turn("user", [read_audio(data), "Say it again."])
    local = "".join(d.text for d in reference.answer([turn], params))
    served = ask(client, model, [audio_part(data), {"type": "text", "text": "Say it again."}], **GREEDY)
    assert served.choices[0].message.content == local


def test_the_runs_closing_command_builds_the_app(student_dir, tmp_path):
    """The command a run's summary ends with: `serve run` of the builder, with the run's config file."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(load_config("smoke", overrides=["student_server.max_batch_size=3"]).to_yaml())
    serve_bin, run, app, *args = shlex.split(serve_command(student_dir, config_file))
    assert (serve_bin, run, app) == ("serve", "run", "salad_ray.serve.deployment:build_app")
    built = build_app(dict(arg.split("=", 1) for arg in args))  # what `serve run` hands the builder
    settings = built._bound_deployment.init_args[1]
    assert built._bound_deployment.init_args[0] == str(student_dir.resolve())
    assert settings.max_batch_size == 3
    with pytest.raises(FileNotFoundError, match="not a saved student"):
        build_app({"student": str(tmp_path)})
