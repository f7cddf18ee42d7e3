"""TTS throughput of the pipeline's TTS stage: 1 and 2 espeak-ng actors, in one run.

The same planned texts (fortunes, interleaved spans, local preset) go through the Ray Data TTS
stage with an actor pool of fixed size 1, then 2. Reported: utterances (speech spans) per second
and seconds of audio produced per second of wall time, the 2-actor figures also as a ratio to the
1-actor run. Actor start-up is inside the timing, amortised over the texts.
Writes results/tts_throughput.json.

    python benchmarks/tts_throughput.py [--texts 240]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=240)
    args = parser.parse_args()

    import pandas as pd
    import ray
    from ray.data import ActorPoolStrategy

    from salad_ray.config import TextSource, load_config
    from salad_ray.corpus import read_texts
    from salad_ray.pipeline.dataflow import text_jobs
    from salad_ray.pipeline.stages import PlanStage, TTSStage

    config = load_config("local")
    records = list(read_texts(TextSource(kind="fortunes", min_words=15, max_words=40, limit=args.texts)))
    jobs = text_jobs(records, config, voices=config.tts.voices, source="bench")
    planner = PlanStage(config.models.llm, config.interleave, config.seed, 2, 400)
    planned = planner(jobs)
    size = config.data.tts_batch_size  # rows per call, as the preset's pipelines send them
    batches = [planned.iloc[i : i + size].reset_index(drop=True) for i in range(0, len(planned), size)]
    spans = int(planned["speech_texts"].map(len).sum())

    ray.init(
        address="local", num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False
    )
    results = {}
    for actors in (1, 2):
        t0 = time.perf_counter()
        out = (
            ray.data.from_pandas(batches)
            .map_batches(
                TTSStage,
                fn_constructor_args=(config.tts,),
                batch_size=size,
                batch_format="pandas",
                compute=ActorPoolStrategy(size=actors),
                num_cpus=1,
            )
            .to_pandas()
        )
        wall = time.perf_counter() - t0
        assert (out["status"] == "ok").all(), out[out["status"] != "ok"]["status"].tolist()[:3]
        audio = float(pd.to_numeric(out["duration"]).sum())
        results[f"{actors}_actors"] = {
            "wall_seconds": wall,
            "utterances_per_s": spans / wall,
            "audio_seconds_per_s": audio / wall,
            "audio_seconds": audio,
        }
        print(actors, results[f"{actors}_actors"], flush=True)
    results["2_over_1"] = results["1_actors"]["wall_seconds"] / results["2_actors"]["wall_seconds"]
    ray.shutdown()
    write_result(
        "tts_throughput", {"workload": {"texts": len(records), "speech_spans": spans}, "results": results}
    )


if __name__ == "__main__":
    main()
