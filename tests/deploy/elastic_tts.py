"""The TTS actor pool on a simulated multi-node cluster (run by test_elastic_tts.py in a subprocess,
so its cluster never meets the test session's). Writes a JSON summary to the path given.

    python -m tests.deploy.elastic_tts grow OUT.json     # autoscaler adds `tts` nodes as the pool grows
    python -m tests.deploy.elastic_tts remove OUT.json   # a `tts` node is removed mid-run

Both run the real text pipeline (espeak-ng TTS actors asking for the custom `tts` resource, the
teacher deployment, shard writing and commit) on nodes that only the TTS actors can use.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

TTS_ACTOR = "MapWorker(MapBatches(PlanAndSpeak))"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tts_actors() -> list[dict]:
    """Alive TTS actors (the GCS actor table: simulated clusters run no dashboard for ray.util.state)."""
    from ray._private.state import actors

    return [a for a in actors().values() if a["ActorClassName"] == TTS_ACTOR and a["State"] == "ALIVE"]


def tts_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("tts")]


def pipeline(root: Path, texts: int):
    """Start the text pipeline in a thread; returns (thread, result dict, jobs)."""
    from salad_ray.config import TextSource, load_config
    from salad_ray.corpus import read_texts
    from salad_ray.pipeline.dataflow import run_texts, text_jobs
    from salad_ray.pipeline.shards import ShardStore

    config = load_config(
        "smoke",
        overrides=[
            "resources.tts_resource=tts",
            "resources.tts_actors=[1, 2]",
            "resources.cpus_per_tts_actor=1",
            "data.tts_batch_size=1",
            f"teacher.http_port={free_port()}",
            "teacher.app_name=elastic-teacher",
        ],
    )
    records = list(
        read_texts(
            TextSource(
                kind="fortunes", categories=["science", "food"], min_words=8, max_words=30, limit=texts
            )
        )
    )
    jobs = text_jobs(records, config, voices=["en-us"], source="active")
    store = ShardStore(root / "store")
    result: dict = {}

    def work():
        try:
            report = run_texts(config, jobs, store, name="elastic", check_asr=False)
            result["written"] = report.written
            result["quarantined"] = sum(report.quarantined.values())
        except Exception as e:  # reported to the test, which fails with it
            result["error"] = repr(e)

    thread = threading.Thread(target=work)
    thread.start()
    return thread, result, jobs, store


def finish(thread, result, jobs, store, out: dict) -> dict:
    thread.join(timeout=600)
    shards, quarantine = store.ids("shards"), store.ids("quarantine")
    out.update(result)
    out["expected"] = sorted(jobs["sample_id"])
    out["delivered"] = sorted(shards + quarantine)
    return out


def grow(root: Path) -> dict:
    import ray
    from ray.cluster_utils import AutoscalingCluster

    cluster = AutoscalingCluster(
        head_resources={"CPU": 4},
        worker_node_types={
            "tts": {"resources": {"CPU": 1, "tts": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}
        },
        idle_timeout_minutes=10,
    )
    cluster.start()
    try:
        ray.init("auto")
        out = {"tts_nodes_before": len(tts_nodes())}
        thread, result, jobs, store = pipeline(root, texts=40)
        peak_actors = peak_nodes = 0
        while thread.is_alive():
            peak_actors = max(peak_actors, len(tts_actors()))
            peak_nodes = max(peak_nodes, len(tts_nodes()))
            time.sleep(0.5)
        out.update(peak_tts_actors=peak_actors, peak_tts_nodes=peak_nodes)
        return finish(thread, result, jobs, store, out)
    finally:
        ray.shutdown()
        cluster.shutdown()


def remove(root: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    nodes = [cluster.add_node(num_cpus=2, resources={"tts": 2}) for _ in range(2)]
    try:
        ray.init(address=cluster.address)
        thread, result, jobs, store = pipeline(root, texts=60)
        deadline = time.time() + 300
        while (
            len({a["Address"]["NodeID"] for a in tts_actors()}) < 2
            and thread.is_alive()
            and time.time() < deadline
        ):
            time.sleep(0.2)  # both TTS actors up, one on each tts node
        time.sleep(1.0)
        victim_id = tts_actors()[0]["Address"]["NodeID"]
        victim = next(n for n in nodes if n.node_id == victim_id)
        cluster.remove_node(victim, allow_graceful=False)
        out = {"removed_while_running": thread.is_alive(), "tts_nodes_after": len(tts_nodes())}
        return finish(thread, result, jobs, store, out)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    mode, path = sys.argv[1], Path(sys.argv[2])
    summary = {"grow": grow, "remove": remove}[mode](path.parent)
    path.write_text(json.dumps(summary))
