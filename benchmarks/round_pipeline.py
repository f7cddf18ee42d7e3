"""A stage-II round's synthesis pipeline, its stages fused into one actor pool or not, in one run.

A round of the `local` preset speaks about 16 pool texts (plan, TTS, ASR check, teacher top-k,
shard write) into a store of its own, while the arms train beside it. With separate stages
(``data.fuse_stages: false``) such a pipeline starts three actor pools (plan and TTS; the ASR check;
the teacher call and the write), each actor importing torch and loading its model; fused, it starts
one. Both variants run ``--repeats`` times, alternating, on the same texts with the teacher deployed
once before the clock starts; each writes into a fresh store, and the fused run must write the very
same samples (ids, tokens and spans). Reported: wall seconds per pipeline (the median of the
repeats) and separate / fused.
Writes results/round_pipeline.json.

    python benchmarks/round_pipeline.py [--texts 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import ray
    from ray import serve

    from salad_ray.config import TextSource, load_config
    from salad_ray.corpus import read_texts
    from salad_ray.pipeline.dataflow import ensure_teacher, run_texts, text_jobs
    from salad_ray.pipeline.shards import ShardStore

    ray.init(
        address="local", num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False
    )
    records = list(read_texts(TextSource(kind="fortunes", min_words=12, max_words=60, limit=args.texts)))
    configs = {
        fused: load_config("local", overrides=[f"data.fuse_stages={str(fused).lower()}"])
        for fused in (False, True)
    }
    ensure_teacher(configs[False])  # deployed once, outside the timing (a run deploys it before its data)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    written: dict[bool, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for fused, config in configs.items():
                store = ShardStore(Path(tmp) / f"{'fused' if fused else 'separate'}-{repeat}")
                jobs = text_jobs(records, config, voices=config.tts.voices, source="active")
                t0 = time.perf_counter()
                report = run_texts(config, jobs, store, name="round")
                seconds[fused].append(time.perf_counter() - t0)
                rows = [
                    row
                    for path in store.files("shards")
                    for row in pq.read_table(path, columns=["sample_id", "token_ids", "spans"]).to_pylist()
                ]
                written[fused] = {r["sample_id"]: (r["token_ids"], r["spans"]) for r in rows}
                print(
                    f"fused={fused} repeat {repeat}: {seconds[fused][-1]:.1f} s, {report.summary()}",
                    flush=True,
                )
    serve.shutdown()
    ray.shutdown()
    assert written[True] == written[False], "fused and separate stages wrote different samples"
    separate, fused = statistics.median(seconds[False]), statistics.median(seconds[True])
    write_result(
        "round_pipeline",
        {
            "workload": {"texts": len(records), "samples_written": len(written[True]), "preset": "local"},
            "results": {
                "separate_seconds": seconds[False],
                "fused_seconds": seconds[True],
                "separate_median_s": separate,
                "fused_median_s": fused,
                "separate_over_fused": separate / fused,
            },
        },
    )


if __name__ == "__main__":
    main()
