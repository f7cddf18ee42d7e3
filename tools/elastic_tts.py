"""The TTS actor pool on a simulated multi-node cluster (ray.cluster_utils.Cluster; run by
tests/deploy/test_elastic_tts.py in a subprocess, so its cluster never meets the test session's):

    python tools/elastic_tts.py OUT.json

The real text pipeline (espeak-ng TTS actors asking for the custom `tts` resource, the teacher
deployment, shard writing and commit) starts on a head node without `tts`; `tts` nodes join one by
one, as an autoscaler would add them, and the first is then removed mid-run. OUT.json gets what
was seen.
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

from salad_ray.testing.processes import free_port

TTS_ACTOR = "MapWorker(MapBatches(PlanAndSpeak))"


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
            "resources.tts.resources={tts: 1}",
            "resources.tts.actors=[1, 2]",
            "resources.tts.cpus=1",
            "data.tts_batch_size=1",
            "data.fuse_stages=false",  # the TTS pool on its own, as on a cluster
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


def wait_for(condition, timeout: float = 300) -> bool:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.2)
    return True


def scenario(root: Path) -> dict:
    """No `tts` node, then one, then a second: the pool follows; then the first is removed mid-run."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    try:
        ray.init(address=cluster.address)
        thread, result, jobs, store = pipeline(root, texts=240)
        out: dict = {}
        time.sleep(5)  # the pool's first actor asks for `tts`, which no node has yet
        out["actors_without_tts_nodes"] = len(tts_actors())
        first = cluster.add_node(num_cpus=1, resources={"tts": 1})  # room for one TTS actor
        wait_for(lambda: len(tts_actors()) >= 1)
        out["actors_with_one_node"] = len(tts_actors())
        time.sleep(1)
        out["actors_still_one_node"] = len(tts_actors())  # backlog, but no room to grow
        cluster.add_node(num_cpus=2, resources={"tts": 2})  # room for two more
        wait_for(lambda: len(tts_actors()) >= 2 or not thread.is_alive())
        out["actors_with_two_nodes"] = len(tts_actors())
        victims = [a["ActorID"] for a in tts_actors() if a["Address"]["NodeID"] == first.node_id]
        out["pipeline_running_at_removal"] = thread.is_alive()
        cluster.remove_node(first, allow_graceful=False)  # its actor dies with its tasks in flight
        wait_for(lambda: len(tts_nodes()) == 1, timeout=60)
        out["tts_nodes_after_removal"] = len(tts_nodes())
        finish(thread, result, jobs, store, out)
        from ray._private.state import actors

        out["victim_restarts"] = [actors(v)["NumRestarts"] for v in victims]
        return out
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(json.dumps(scenario(path.parent)))
