"""Student serving: time to first token and tokens/s through Ray Serve versus in-process generation.

The student is the `local` preset's, untrained (SmolLM2-135M-Instruct behind whisper-tiny and a
seeded adapter), saved and loaded as a run's would be. Each request is one espeak-ng utterance and a
line of text, answered greedily up to --max-tokens. The same requests run

* in-process: StudentEngine, 1 request at a time, then all --concurrency at once as one batch;
* served: the Serve deployment through the official `openai` client, streamed, 1 at a time, then
  --concurrency at once (Serve's dynamic batching merges them).

Time to first token is from sending a request to its first text; tokens/s is all completion tokens
over the wall time of the round (median of --repeats rounds). Ratios are against in-process in the
same run. The replica is given every CPU of the machine, as in-process generation has. Writes
results/student_serving.json.

    python benchmarks/student_serving.py [--concurrency 8] [--max-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result

PROMPTS = [
    "The library opens at nine and closes at five.",
    "A small boat crossed the river before the storm.",
    "Please bring two loaves of bread and some cheese.",
    "The train to the coast leaves from platform four.",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summary(rounds: list[tuple[float, list[float], int]]) -> dict[str, float]:
    """(wall seconds, first-token seconds per request, completion tokens) per round -> medians."""
    return {
        "ttft_s": statistics.median(t for _, firsts, _ in rounds for t in firsts),
        "tokens_per_s": statistics.median(tokens / wall for wall, _, tokens in rounds),
    }


def in_process(engine, conversations: list, params, concurrency: int, repeats: int) -> dict[str, float]:
    """Requests prepared (audio encoded) and decoded in batches of ``concurrency``, as the served
    replica batches concurrent requests."""
    rounds = []
    for _ in range(repeats):
        t0, firsts, tokens = time.perf_counter(), [], 0
        for start in range(0, len(conversations), concurrency):
            t_batch = time.perf_counter()
            chunk = conversations[start : start + concurrency]
            batch = engine.prepare_many([(turns, params, "max_tokens") for turns in chunk])
            seen = [False] * len(batch)
            for step in engine.stream(batch):
                for k, delta in enumerate(step):
                    if delta is None:
                        continue
                    if delta.text and not seen[k]:
                        seen[k] = True
                        firsts.append(time.perf_counter() - t_batch)
                    if delta.finish:
                        tokens += delta.completion_tokens
        rounds.append((time.perf_counter() - t0, firsts, tokens))
    return _summary(rounds)


def served(
    client, model: str, contents: list, concurrency: int, max_tokens: int, repeats: int
) -> dict[str, float]:
    def one(content) -> tuple[float, int]:
        t0, first, tokens = time.perf_counter(), None, 0
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": content}],
            stream=True,
            temperature=0,
            max_tokens=max_tokens,
        )
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t0
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return (first if first is not None else time.perf_counter() - t0), tokens

    rounds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            out = list(pool.map(one, contents))
        rounds.append((time.perf_counter() - t0, [f for f, _ in out], sum(n for _, n in out)))
    return _summary(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import openai
    import ray
    import soundfile as sf
    import torch
    from ray import serve

    from salad_ray.config import load_config
    from salad_ray.generation import SamplingParams
    from salad_ray.model.student import SpeechLM
    from salad_ray.serve.deployment import deploy_student
    from salad_ray.serve.engine import StudentEngine
    from salad_ray.serve.prompt import Turn
    from salad_ray.tts.espeak import EspeakTTS

    cpus = os.cpu_count() or 1
    config = load_config(
        "local",
        overrides=[
            f"student_server.http_port={_port()}",
            f"student_server.max_batch_size={args.concurrency}",
            "student_server.batch_wait_timeout_s=0.05",
            f"resources.cpus_per_student_replica={cpus}",
        ],
    )
    student_dir = Path(tempfile.mkdtemp(prefix="salad-student-")) / "local-untrained"
    torch.manual_seed(0)
    SpeechLM.from_config(config.models).save(student_dir)

    tts = EspeakTTS()
    waves = [tts.synthesize([PROMPTS[n % len(PROMPTS)]], "en-us")[0] for n in range(args.concurrency)]
    text = "Repeat what you heard."
    params = SamplingParams(args.max_tokens, temperature=0)

    engine = StudentEngine.load(student_dir, config.student_server)
    conversations = [[Turn("user", [w, text])] for w in waves]
    in_process(engine, conversations[:1], params, 1, 1)  # warm-up
    local = {c: in_process(engine, conversations, params, c, args.repeats) for c in (1, args.concurrency)}
    del engine

    def part(wave) -> dict:
        buffer = io.BytesIO()
        sf.write(buffer, wave, 16_000, format="WAV")
        data = base64.b64encode(buffer.getvalue()).decode()
        return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}

    contents = [[part(w), {"type": "text", "text": text}] for w in waves]
    ray.init(address="local", num_cpus=cpus + 1, include_dashboard=False, log_to_driver=False)
    deploy_student(config, student_dir)
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{config.student_server.http_port}/v1", api_key="none", max_retries=0
    )
    model = client.models.list().data[0].id
    served(client, model, contents[:1], 1, args.max_tokens, 1)  # warm-up
    remote = {
        c: served(client, model, contents, c, args.max_tokens, args.repeats) for c in (1, args.concurrency)
    }
    serve.shutdown()
    ray.shutdown()

    results = {}
    for c in (1, args.concurrency):
        results[f"concurrency_{c}"] = {
            "in_process": local[c],
            "serve": remote[c],
            "serve_tokens_per_s_over_in_process": remote[c]["tokens_per_s"] / local[c]["tokens_per_s"],
            "serve_ttft_minus_in_process_s": remote[c]["ttft_s"] - local[c]["ttft_s"],
        }
        print(c, results[f"concurrency_{c}"], flush=True)
    write_result(
        "student_serving",
        {
            "workload": vars(args) | {"requests": len(contents), "student": "local preset, untrained"},
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
