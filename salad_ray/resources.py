"""Every resource request of a run, in one place, derived from ``config.resources``.

Actors, deployments and train workers ask for what these functions return; nothing else in the code
names CPU, GPU or custom-resource amounts. The deployment check (k8s manifests) reads the same
functions, so a cluster layout that could never satisfy a run is caught before it is applied.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from salad_ray.config import ActorPoolConfig, ReplicaConfig, RunConfig


def _serve_options(cpus: float, gpus: float, replicas: ReplicaConfig, max_ongoing: int) -> dict[str, Any]:
    return {
        "ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus},
        "autoscaling_config": {
            "min_replicas": replicas.min_replicas,
            "max_replicas": replicas.max_replicas,
            "initial_replicas": max(1, replicas.min_replicas),
            "target_ongoing_requests": replicas.target_ongoing_requests,
        },
        "max_ongoing_requests": max_ongoing,
    }


def teacher_deployment_options(config: RunConfig) -> dict[str, Any]:
    """Ray Serve options of the teacher deployment: replica resources, autoscaling, concurrency."""
    r, t = config.resources, config.teacher
    return _serve_options(
        r.cpus_per_teacher_replica, r.gpus_per_teacher_replica, t.replicas, t.max_ongoing_requests
    )


def student_deployment_options(config: RunConfig) -> dict[str, Any]:
    """Ray Serve options of a served student (salad_ray.serve): as the teacher's, from its own
    section; its GPU share defaults to a teacher replica's (the same LLM, plus encoder and adapter)."""
    r, s = config.resources, config.student_server
    gpus = r.gpus_per_teacher_replica if r.gpus_per_student_replica is None else r.gpus_per_student_replica
    return _serve_options(r.cpus_per_student_replica, gpus, s.replicas, s.max_ongoing_requests)


def pool_stage_options(pool: ActorPoolConfig) -> dict[str, Any]:
    """Ray Data options of one actor pool: (min, max) actors, and each actor's CPUs, GPUs and custom
    resources (the TTS pool's ``tts`` unit, for example)."""
    from ray.data import ActorPoolStrategy

    options: dict[str, Any] = {
        "compute": ActorPoolStrategy(min_size=pool.actors[0], max_size=pool.actors[1]),
        "num_cpus": pool.cpus,
    }
    if pool.gpus:
        options["num_gpus"] = pool.gpus
    if pool.resources:
        options["resources"] = dict(pool.resources)
    return options


def eval_task_options(config: RunConfig) -> dict[str, Any]:
    """Ray task options of the evaluation (one task scoring every system in turn)."""
    r = config.resources
    return {"num_cpus": r.cpus_per_eval_task, "num_gpus": r.gpus_per_eval_task}


def run_eval_task(config: RunConfig, fn: Callable, *args) -> Any:
    """``fn(*args)`` in a Ray task with the evaluation's resources (:func:`eval_task_options`)."""
    import ray

    return ray.get(ray.remote(fn).options(**eval_task_options(config)).remote(*args))


def light_stage_options(config: RunConfig, max_actors: int = 2) -> dict[str, Any]:
    """Ray Data options of the light stages (tokenising, asking the teacher, writing shards)."""
    return pool_stage_options(
        ActorPoolConfig(actors=(1, max_actors), cpus=config.resources.cpus_per_light_actor)
    )


def train_scaling_config(config: RunConfig):
    """Ray Train's ScalingConfig: a fixed worker count or an elastic (min, max) range."""
    from ray.train import ScalingConfig

    r = config.resources
    workers = r.train_workers if isinstance(r.train_workers, int) else tuple(r.train_workers)
    return ScalingConfig(
        num_workers=workers, use_gpu=r.use_gpu, resources_per_worker={"CPU": r.cpus_per_train_worker}
    )


def max_train_workers(config: RunConfig) -> int:
    workers = config.resources.train_workers
    return workers if isinstance(workers, int) else workers[1]


def peak_cpus(config: RunConfig) -> float:
    """CPUs the run needs at once at its busiest, each pool at its minimum size: the teacher, plus
    either the data phases (the held-out, natural and text pipelines side by side) or stage II (per
    arm, one round being prepared and the trainer). Fewer and some stage could wait forever."""
    r = config.resources
    teacher = (
        0.0
        if config.teacher.url
        else r.cpus_per_teacher_replica * max(1, config.teacher.replicas.min_replicas)
    )
    pipeline = 2 * r.cpus_per_light_actor + _min_cpus(r.tts) + _min_cpus(r.asr)
    prepare = max(pipeline, _min_cpus(r.scorer), _min_cpus(r.embed))
    workers = r.train_workers if isinstance(r.train_workers, int) else r.train_workers[0]
    arms = 2 if config.selection.compare_uniform else 1
    return teacher + max(3 * pipeline, arms * (prepare + workers * r.cpus_per_train_worker))


def _min_cpus(pool: ActorPoolConfig) -> float:
    return pool.actors[0] * pool.cpus


def local_cpus(config: RunConfig) -> int:
    """The logical CPUs of a local Ray instance a run starts: ``resources.local_cpus``, else the
    machine's cores or the run's peak (:func:`peak_cpus`), whichever is more."""
    return config.resources.local_cpus or max(os.cpu_count() or 1, math.ceil(peak_cpus(config)))


class ClusterTooSmall(RuntimeError):
    """The Ray cluster can never run the whole loop of this configuration."""


def check_cluster(config: RunConfig, available_cpus: float) -> None:
    """Fail early, naming the numbers, when a cluster can never run the whole loop."""
    need = peak_cpus(config)
    if available_cpus < need:
        raise ClusterTooSmall(
            f"the Ray cluster has {available_cpus:g} CPUs but this run needs {need:g} at once (teacher "
            f"replica, TTS/ASR/light stage minimums, train workers); add nodes, start the head with "
            f"`ray start --head --num-cpus={math.ceil(need)}`, or lower resources.*"
        )


@dataclass(frozen=True)
class Demand:
    """What one kind of actor, replica, worker or task asks of a node, and how many run at once."""

    what: str
    bundle: dict[str, float]  # Ray resources of one: CPU, GPU, custom ones such as tts
    at_least: int  # how many must fit at the same time (pool minimums, the smallest worker count)
    keys: dict[str, str]  # each resource of the bundle other than CPU -> the config key asking for it


def _bundle(options: dict[str, Any]) -> dict[str, float]:
    bundle = {"CPU": float(options.get("num_cpus", 1))}
    if options.get("num_gpus"):
        bundle["GPU"] = float(options["num_gpus"])
    bundle.update({k: float(v) for k, v in options.get("resources", {}).items()})
    return bundle


def _replica_demand(what: str, options: dict[str, Any], gpu_key: str) -> Demand:
    return Demand(
        what,
        _bundle(options["ray_actor_options"]),
        max(1, options["autoscaling_config"]["min_replicas"]),
        {"GPU": gpu_key},
    )


def teacher_demand(config: RunConfig) -> Demand:
    return _replica_demand(
        "teacher replica", teacher_deployment_options(config), "resources.gpus_per_teacher_replica"
    )


def student_demand(config: RunConfig) -> Demand:
    """What serving a student asks of a cluster (a RayService of salad_ray.serve, not part of a run)."""
    key = "resources.gpus_per_student_replica"
    if config.resources.gpus_per_student_replica is None:
        key = "resources.gpus_per_teacher_replica"
    return _replica_demand("student replica", student_deployment_options(config), key)


def _pool_demand(what: str, key: str, pool: ActorPoolConfig) -> Demand:
    options = pool_stage_options(pool)
    keys = {"GPU": f"{key}.gpus", **{name: f"{key}.resources" for name in pool.resources}}
    return Demand(what, _bundle(options), pool.actors[0], keys)


def demands(config: RunConfig) -> list[Demand]:
    """Every resource request of a run, from the same functions the run's actors are made with."""
    r = config.resources
    out = []
    if not config.teacher.url:
        out.append(teacher_demand(config))
    workers = r.train_workers if isinstance(r.train_workers, int) else r.train_workers[0]
    gpu = {"GPU": 1.0} if r.use_gpu else {}
    out.append(
        Demand("train worker", {"CPU": r.cpus_per_train_worker, **gpu}, workers, {"GPU": "resources.use_gpu"})
    )
    out += [
        _pool_demand("TTS actor", "resources.tts", r.tts),
        _pool_demand("ASR actor", "resources.asr", r.asr),
        _pool_demand("embedding actor", "resources.embed", r.embed),
        _pool_demand("scorer actor", "resources.scorer", r.scorer),
        Demand("light stage actor", _bundle(light_stage_options(config)), 1, {}),
        Demand(
            "evaluation task",
            _bundle(eval_task_options(config)),
            1,
            {"GPU": "resources.gpus_per_eval_task"},
        ),
    ]
    return out


# The actors, replicas, workers and tasks each kind of phase uses (--plan prints them).
_PHASE_DEMANDS = {
    "speech": ("TTS actor", "ASR actor", "light stage actor", "teacher replica"),
    "text": ("light stage actor", "teacher replica"),
    "embed": ("embedding actor",),
    "score": ("scorer actor",),
    "train": ("train worker",),
    "eval": ("evaluation task",),
}


def phase_asks(config: RunConfig, kind: str) -> str:
    """What a kind of phase (a key of ``_PHASE_DEMANDS``) asks of the cluster: at least how many of
    which actor, each with which resources."""
    by_what = {d.what: d for d in demands(config)}
    needs = [by_what[what] for what in _PHASE_DEMANDS[kind] if what in by_what]
    return "; ".join(
        f"{d.at_least}+ {d.what} x {', '.join(f'{k} {v:g}' for k, v in d.bundle.items())}" for d in needs
    )
