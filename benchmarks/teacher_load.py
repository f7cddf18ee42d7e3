"""Teacher load: the deployment's HTTP route under concurrent clients, with a share of bad requests.

For each backend (transformers, vLLM), the `local` preset's teacher is deployed and
:func:`salad_ray.teacher.load.run_load` runs twice on 127.0.0.1 with the same clients and requests:
all good (the baseline), then with ``--bad-share`` of them malformed. It records whether the route
held (every good request answered, every bad one 400), the request rate of each, their ratio, and
whether the replica restarted. Writes results/teacher_load.json.

    python benchmarks/teacher_load.py [--clients 8] [--requests 16] [--bad-share 0.25] [--tokens 64]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result
from teacher_throughput import teacher_config, workload

from salad_ray.testing.processes import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=16, help="requests per client")
    parser.add_argument("--bad-share", type=float, default=0.25)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per good prompt")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()

    import ray
    from ray import serve
    from transformers import AutoTokenizer

    from salad_ray.assets import resolve
    from salad_ray.teacher.deployment import deploy_teacher, live_replicas
    from salad_ray.teacher.load import run_load

    model = "asset:smollm2-135m-instruct"
    sequences = workload(AutoTokenizer.from_pretrained(resolve(model)), 32, args.tokens)
    cpus = os.cpu_count() or 1
    port = free_port()
    ray.init(address="local", num_cpus=cpus + 1, include_dashboard=False, log_to_driver=False)
    results = {}
    for backend in ("transformers", "vllm"):
        config = teacher_config(
            backend,
            args.k,
            cpus,
            f"teacher.app_name=load-{backend}",
            f"teacher.route_prefix=/{backend}",
            f"teacher.http_port={port}",
        )
        handle = deploy_teacher(config)
        vocab_size = handle.limits.remote().result().vocab_size
        url = f"http://127.0.0.1:{port}/{backend}/v1"
        before = live_replicas(config.teacher.app_name)

        def load(bad_share: float, url=url, vocab_size=vocab_size):
            return run_load(
                url,
                model,
                sequences,
                args.k,
                vocab_size,
                clients=args.clients,
                requests=args.requests,
                bad_share=bad_share,
            )

        load(0.0)  # warm-up
        baseline, mixed = load(0.0), load(args.bad_share)
        results[backend] = {
            "all_good": baseline.to_json(),
            "with_bad": mixed.to_json(),
            "held": baseline.held and mixed.held,
            "replica_restarted": live_replicas(config.teacher.app_name) != before,
            "rate_with_bad_over_all_good": mixed.rate / baseline.rate,
        }
        print(backend, {k: v for k, v in results[backend].items() if not isinstance(v, dict)}, flush=True)
        serve.delete(config.teacher.app_name)
    serve.shutdown()
    ray.shutdown()
    write_result("teacher_load", {"workload": vars(args), "results": results})


if __name__ == "__main__":
    main()
