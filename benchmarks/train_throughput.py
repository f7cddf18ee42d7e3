"""Training throughput: the Ray Train loop against a plain single-process loop, and MFU.

Both loops train the same student (the `local` preset: SmolLM2-135M, whisper-tiny, the local
adapter) on the same batches of the same deterministic stream with the same step function
(salad_ray.train.loop.train_step); the Ray loop runs on one TorchTrainer worker, so the ratio is
what Ray Train, Ray Data ingest and DDP cost. Throughput is LLM positions per second over steady
steps (the first window, which loads models and warms up, is left out). MFU is model FLOPs over
the dense fp32 matmul peak measured in this run on this machine. Writes
results/train_throughput.json.

    python benchmarks/train_throughput.py [--steps 9] [--batch 4] [--samples 24]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result


def plain_loop(config, job, stream_samples: list[list], steps: int) -> tuple[float, float]:
    """(positions per second, model FLOPs per second) of the plain loop over steps 2..N: the Ray
    loop's student, optimizer and step function (salad_ray.train.loop), without Ray."""
    import torch
    import torch.distributed as dist

    from salad_ray.train.loop import build_student, make_optimizer, train_step

    dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    student = build_student(config, job, None)
    optimizer = make_optimizer(student, config, job.lr_adapter, job.lr_llm)
    generator = torch.Generator().manual_seed(config.train.seed)
    positions = flops = 0.0
    t0 = None
    for step in range(steps):
        if step == 1:
            t0 = time.perf_counter()  # step 0 warms up
        sums = train_step(
            student, student, [stream_samples[step]], config, job, 1, torch.device("cpu"), generator
        )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 1:
            positions += sums["positions"]
            flops += sums["flops"]
    elapsed = time.perf_counter() - t0
    dist.destroy_process_group()
    return positions / elapsed, flops / elapsed


def measure(precision: str, steps: int, batch: int, samples: int) -> dict:
    """Both loops on the same batches under ``train.precision`` = ``precision``, in a local Ray
    instance of their own: throughputs, their ratio and MFUs against this run's matmul peak."""
    import json

    import pandas as pd
    import ray
    import torch

    from salad_ray.config import load_config
    from salad_ray.corpus import read_texts
    from salad_ray.pipeline.dataflow import run_texts, text_jobs
    from salad_ray.pipeline.shards import ShardStore
    from salad_ray.train.data import load_rows, micro_steps, stream_rows
    from salad_ray.train.flops import matmul_peak
    from salad_ray.train.launcher import train_stage
    from salad_ray.train.loop import StageJob
    from salad_ray.train.mixture import mixture_stream, pool_refs
    from salad_ray.train.reporting import MetricsLog

    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    log_every = 3
    config = load_config(
        "local",
        overrides=[
            "teacher.backend=transformers",
            "resources.train_workers=1",
            f"resources.cpus_per_train_worker={os.cpu_count() or 1}",
            f"train.batch_size={batch}",
            f"train.precision={precision}",
            f"train.log_every={log_every}",
            f"train.checkpoint_every={steps}",
            "train.eval_every=0",
        ],
    )
    ray.init(
        address="local", num_cpus=(os.cpu_count() or 1) + 2, include_dashboard=False, log_to_driver=False
    )
    store = ShardStore(work / "natural")
    source = config.data.natural_standin
    records = list(read_texts(source.text))[:samples]
    print(
        run_texts(
            config,
            text_jobs(records, config, voices=source.voices, source="natural"),
            store,
            name="bench",
            check_asr=False,
        ).summary()
    )

    # The same stream both loops read: step s is samples [s * batch, (s + 1) * batch).
    stream = mixture_stream(
        {"natural": pool_refs(store, "natural")}, {"natural": 1.0}, steps * batch, config.train.seed
    )
    rows = load_rows(pd.DataFrame(stream_rows(stream, batch, 1))).to_dict("records")
    batches = [micro for _, _, micro, _ in micro_steps(iter(rows), 0)]

    peak = matmul_peak(torch.device("cpu"), torch.bfloat16 if precision == "bf16" else torch.float32)
    job = StageJob(
        name="bench",
        stores={"natural": [str(store.root)]},
        weights={"natural": 1.0},
        total_steps=steps,
        until_step=steps,
    )
    plain_tps, plain_flops = plain_loop(config, job, batches, steps)

    train_stage(config, work / "train", job, log=MetricsLog(job.name, work / "metrics.jsonl"))
    windows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()][1:]
    ray_tps = sum(w["tokens_per_s"] for w in windows) / len(windows)
    ray_mfu = sum(w["mfu"] * w["peak_flops"] / peak for w in windows) / len(
        windows
    )  # against this run's peak
    ray.shutdown()
    return {
        "matmul_peak_flops": peak,
        "plain_tokens_per_s": plain_tps,
        "ray_train_tokens_per_s": ray_tps,
        "ray_over_plain": ray_tps / plain_tps,
        "plain_mfu": plain_flops / peak,
        "ray_train_mfu": ray_mfu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--samples", type=int, default=24)
    args = parser.parse_args()
    workload = {"preset": "local", "steps": args.steps, "batch": args.batch, "device": "cpu", "dtype": "fp32"}
    write_result(
        "train_throughput",
        {"workload": workload, "results": measure("fp32", args.steps, args.batch, args.samples)},
    )


if __name__ == "__main__":
    main()
