"""Rehearse paper-3b here: its whole loop at toy size, on a simulated cluster with its node groups.

    python tools/rehearse.py [--run-dir runs/rehearsal] [--data runs/rehearsal-data] [--faults]

Builds the rehearsal's local models and data when missing (tools/rehearsal_data.py), starts a Ray
cluster of simulated nodes on this machine (``ray.cluster_utils.Cluster``) shaped like the KubeRay
layout in k8s/: a head that holds no work (no CPUs), a ``gpu`` group node with logical GPUs and a
``tts`` group node offering only the ``tts`` resource (its GPU is the tts units', as in k8s/). It then
runs ``python -m salad_ray.run --preset rehearsal`` against that cluster and reports on which group
every actor ran. It fails when the run fails, when an actor asking for resources ran on the head,
when a TTS actor ran outside the tts group, or when an actor asking for a GPU ran inside it.

With ``--faults`` it also kills (SIGKILL), once each, a Ray Train worker mid-stage (after stage I's
first checkpoint) and a TTS actor mid-round (the first one alive after stage I), as a lost node
would; the run must still end at its planned step with every sample once (tests/test_rehearsal.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Logical resources of each simulated node: paper-3b's groups (k8s/base), scaled to this machine.
GROUPS: dict[str, dict] = {
    "head": {"num_cpus": 0, "num_gpus": 0},
    "gpu": {"num_cpus": 6, "num_gpus": 4},
    "tts": {"num_cpus": 2, "num_gpus": 0, "resources": {"tts": 2}},  # its GPU is the tts units'
}


def start_cluster():
    """The simulated cluster and the group of each of its node ids."""
    from ray.cluster_utils import Cluster

    head = GROUPS["head"]
    # the dashboard serves the state API that placements() reads
    cluster = Cluster(initialize_head=True, head_node_args={**head, "include_dashboard": True})
    groups = {cluster.head_node.node_id: "head"}
    for name in ("gpu", "tts"):
        groups[cluster.add_node(**GROUPS[name]).node_id] = name
    cluster.wait_for_nodes()
    return cluster, groups


def _actors(**filters) -> list:
    from ray.util.state import list_actors

    return list_actors(
        filters=[(k, "=", v) for k, v in filters.items()],
        detail=True,
        limit=10_000,
        raise_on_missing_output=False,
    )


def _speaks(actor) -> bool:
    """A TTS actor: it holds the custom resource that only the tts group offers (paper-3b's
    ``resources.tts.resources``), whether TTS runs alone or fused with the stages after it."""
    return "tts" in (actor.required_resources or {})


def placements(groups: dict[str, str]) -> list[dict]:
    """Every actor the run started (dead or alive): its class, its group, whether it speaks."""
    return [
        {
            "class": a.class_name,
            "group": groups.get(a.node_id, "?"),
            "tts": _speaks(a),
            "gpu": (a.required_resources or {}).get("GPU", 0) > 0,
            # CPUs, GPUs or a custom resource; Ray pins its own controllers with node:* markers
            "work": any(v > 0 and not k.startswith("node:") for k, v in (a.required_resources or {}).items()),
        }
        for a in _actors()
    ]


def misplaced(actors: list[dict]) -> list[str]:
    # Ray's own control actors (controllers, coordinators) ask for nothing and may sit on the head
    problems = [f"{a['class']} ran on the head" for a in actors if a["group"] == "head" and a["work"]]
    problems += [
        f"{a['class']} ran in the {a['group']} group" for a in actors if a["tts"] and a["group"] != "tts"
    ]
    problems += [
        f"{a['class']} took a GPU of the tts group" for a in actors if a["gpu"] and a["group"] == "tts"
    ]
    return problems


class Faults(threading.Thread):
    """Kills a train worker mid-stage and a TTS actor mid-round, once each (SIGKILL, as a lost node)."""

    def __init__(self, run_dir: Path):
        from salad_ray.rundir import RunDir

        super().__init__(daemon=True)
        self.dirs, self.killed, self.done = RunDir(run_dir), {}, threading.Event()
        self.error: str | None = None  # why the faults stopped, if they failed

    def _phases(self) -> list[str]:
        from salad_ray.runstate import read_state

        return read_state(self.dirs.state).done

    def _kill(self, what: str, actor) -> None:
        os.kill(actor.pid, signal.SIGKILL)
        self.killed[what] = {"class": actor.class_name, "actor_id": actor.actor_id}

    def run(self) -> None:
        try:
            self._inject()
        except Exception as e:  # reported in the summary: a fault that never fired fails the rehearsal
            self.error = repr(e)
            raise

    def _inject(self) -> None:
        from salad_ray.rundir import STAGE1_JOB
        from salad_ray.train.launcher import stored_result

        while not self.done.wait(0.5) and len(self.killed) < 2:
            phases = self._phases()
            stage1 = stored_result(self.dirs.train / STAGE1_JOB)  # Ray Train's latest checkpoint
            checkpointed = stage1 is not None and stage1.metrics.get("step", 0) >= 1
            if "train worker" not in self.killed and "stage1" not in phases and checkpointed:
                workers = _actors(class_name="RayTrainWorker", state="ALIVE")
                if workers:
                    self._kill("train worker", workers[-1])
            if "TTS actor" not in self.killed and "stage1" in phases:
                speakers = [a for a in _actors(state="ALIVE") if _speaks(a)]
                if speakers:
                    self._kill("TTS actor", speakers[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/rehearsal"))
    parser.add_argument("--data", type=Path, default=Path("runs/rehearsal-data"))
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--faults", action="store_true", help="kill a train worker and a TTS actor mid-run")
    parser.add_argument("--summary", type=Path, help="write the placements and kills here as JSON")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tools"))
    from rehearsal_data import build

    build(args.data)
    cluster, groups = start_cluster()
    import ray

    ray.init(address=cluster.address, log_to_driver=False)  # the state API, for faults and placements
    faults = Faults(args.run_dir)
    try:
        command = [
            sys.executable,
            "-m",
            "salad_ray.run",
            "--preset",
            "rehearsal",
            "--run-dir",
            str(args.run_dir),
        ]
        command += ["--resume"] if args.resume else []
        command += [f"--set={o}" for o in args.overrides]
        env = {**os.environ, "RAY_ADDRESS": cluster.address}
        if args.faults:
            faults.start()
        done = subprocess.run(command, env=env, check=False)
        faults.done.set()
        actors = placements(groups)
    finally:
        ray.shutdown()
        cluster.shutdown()
    by_group = Counter((a["class"], a["group"]) for a in actors)
    summary = {
        "returncode": done.returncode,
        "placements": {f"{c} @ {g}": n for (c, g), n in sorted(by_group.items())},
        "misplaced": misplaced(actors),
        "killed": faults.killed,
        "fault_error": faults.error,
    }
    print(json.dumps(summary, indent=1))
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=1))
    return done.returncode or int(bool(summary["misplaced"]) or faults.error is not None)


if __name__ == "__main__":
    sys.exit(main())
