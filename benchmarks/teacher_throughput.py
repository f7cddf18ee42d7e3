"""Teacher throughput: top-k scoring through the Ray Serve deployment versus the same engine in-process.

For each backend (transformers; vLLM with its threads bound as vLLM chooses, ``auto``, and to every
CPU, ``all``: ``teacher.cpu_threads_bind``), the same token sequences are scored with the same k:

* in-process: the backend object called directly, one batch after another;
* serve, sequential: the same batches through the deployment's handle, one after another
  (the cost of Serve itself);
* serve, concurrent: the same batches sent at once (what a Ray Data stage does).

Throughput is prompt tokens scored per second (median of the repeats); ratios are against the
in-process baseline measured in the same run. The replica is given as many CPUs as the machine has
(Ray sets a replica's torch threads from its CPU request), so both sides compute with the same
threads. Writes results/teacher_throughput.json.

    python benchmarks/teacher_throughput.py [--sequences 32] [--tokens 128] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import timed, write_result


def workload(tokenizer, n: int, length: int) -> list[list[int]]:
    from salad_ray.config import TextSource
    from salad_ray.corpus import read_texts

    stream: list[int] = []
    for record in read_texts(TextSource(kind="fortunes")):
        stream += tokenizer.encode(" " + record.text, add_special_tokens=False)
        if len(stream) >= n * length:
            break
    return [stream[i * length : (i + 1) * length] for i in range(n)]


def teacher_config(backend: str, k: int, cpus: int, *overrides: str):
    """The `local` preset's teacher on ``backend`` with top-k ``k``; its replica asks for ``cpus``
    CPUs (Ray sets the replica's torch threads from them)."""
    from salad_ray.config import load_config

    return load_config(
        "local",
        overrides=[
            f"teacher.backend={backend}",
            f"distill.top_k={k}",
            f"resources.cpus_per_teacher_replica={cpus}",
            *overrides,
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()

    import ray
    from ray import serve
    from transformers import AutoTokenizer

    from salad_ray.assets import resolve
    from salad_ray.teacher.backends import BackendSpec, build_backend
    from salad_ray.teacher.client import HandleClient
    from salad_ray.teacher.deployment import deploy_teacher

    tokenizer = AutoTokenizer.from_pretrained(resolve("asset:smollm2-135m-instruct"))
    seqs = workload(tokenizer, args.sequences, args.tokens)
    batches = [seqs[i : i + args.batch] for i in range(0, len(seqs), args.batch)]
    tokens = sum(len(s) for s in seqs)
    cpus = os.cpu_count() or 1
    ray.init(address="local", num_cpus=cpus + 1, include_dashboard=False, log_to_driver=False)
    results = {}
    variants = {
        "transformers": ("transformers", ()),
        "vllm": ("vllm", ("teacher.cpu_threads_bind=auto",)),
        "vllm-all-cpus": ("vllm", ("teacher.cpu_threads_bind=all",)),
    }
    for name, (backend, overrides) in variants.items():
        config = teacher_config(
            backend, args.k, cpus, f"teacher.app_name=bench-{name}", "teacher.max_batch_size=8", *overrides
        )
        engine = build_backend(BackendSpec.from_config(config))
        loop = asyncio.new_event_loop()

        def in_process(engine=engine, loop=loop):
            for b in batches:
                loop.run_until_complete(engine.score(b, args.k))

        in_process()  # warm-up
        t_local = statistics.median(timed(in_process, args.repeats))
        engine.close()
        del engine

        deploy_teacher(config)
        client = HandleClient(config.teacher.app_name)

        def sequential(client=client):
            for b in batches:
                client.topk(b, args.k)

        def concurrent(client=client):
            with ThreadPoolExecutor(len(batches)) as pool:
                list(pool.map(lambda b: client.topk(b, args.k), batches))

        sequential()  # warm-up
        t_seq = statistics.median(timed(sequential, args.repeats))
        t_con = statistics.median(timed(concurrent, args.repeats))
        serve.delete(config.teacher.app_name)
        results[name] = {
            "in_process_tokens_per_s": tokens / t_local,
            "serve_sequential_tokens_per_s": tokens / t_seq,
            "serve_concurrent_tokens_per_s": tokens / t_con,
            "serve_sequential_over_in_process": t_local / t_seq,
            "serve_concurrent_over_in_process": t_local / t_con,
        }
        print(name, results[name], flush=True)
    serve.shutdown()
    ray.shutdown()
    base = results["transformers"]["in_process_tokens_per_s"]
    ratios = {f"{name}_over_transformers": r["in_process_tokens_per_s"] / base for name, r in results.items()}
    payload = {"workload": vars(args) | {"tokens": tokens}, "results": results, "in_process_ratios": ratios}
    write_result("teacher_throughput", payload)


if __name__ == "__main__":
    main()
