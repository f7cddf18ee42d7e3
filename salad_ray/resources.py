"""Every resource request of a run, in one place, derived from ``config.resources``.

Actors, deployments and train workers ask for what these functions return; nothing else in the code
names CPU, GPU or custom-resource amounts. The deployment check (k8s manifests) reads the same
functions, so a cluster layout that could never satisfy a run is caught before it is applied.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from salad_ray.config import ReplicaConfig, RunConfig


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


def _pool(size: tuple[int, int]):
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(min_size=size[0], max_size=size[1])


def tts_stage_options(config: RunConfig) -> dict[str, Any]:
    """Ray Data options of the TTS actor pool: (min, max) actors, CPU/GPU, the custom ``tts`` resource."""
    r = config.resources
    options: dict[str, Any] = {"compute": _pool(r.tts_actors), "num_cpus": r.cpus_per_tts_actor}
    if r.gpus_per_tts_actor:
        options["num_gpus"] = r.gpus_per_tts_actor
    if r.tts_resource:
        options["resources"] = {r.tts_resource: 1}
    return options


def asr_stage_options(config: RunConfig) -> dict[str, Any]:
    """Ray Data options of the ASR (CER check) actor pool."""
    r = config.resources
    return _model_stage(r.asr_actors, r.cpus_per_asr_actor, r.gpus_per_asr_actor)


def _model_stage(pool: tuple[int, int], cpus: float, gpus: float) -> dict[str, Any]:
    options: dict[str, Any] = {"compute": _pool(pool), "num_cpus": cpus}
    if gpus:
        options["num_gpus"] = gpus
    return options


def embed_stage_options(config: RunConfig) -> dict[str, Any]:
    """Ray Data options of the sentence-embedding actor pool."""
    r = config.resources
    return _model_stage(r.embed_actors, r.cpus_per_embed_actor, r.gpus_per_embed_actor)


def scorer_stage_options(config: RunConfig) -> dict[str, Any]:
    """Ray Data options of the scorer actors (a student checkpoint each, measuring M)."""
    r = config.resources
    return _model_stage(r.scorer_actors, r.cpus_per_scorer_actor, r.gpus_per_scorer_actor)


def eval_task_options(config: RunConfig) -> dict[str, Any]:
    """Ray task options of the evaluation (one task scoring every system in turn)."""
    r = config.resources
    return {"num_cpus": r.cpus_per_eval_task, "num_gpus": r.gpus_per_eval_task}


def light_stage_options(config: RunConfig, max_actors: int = 2) -> dict[str, Any]:
    """Ray Data options of the light stages (tokenising, asking the teacher, writing shards)."""
    return {"compute": _pool((1, max_actors)), "num_cpus": config.resources.cpus_per_light_actor}


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
    pipeline = (
        2 * r.cpus_per_light_actor
        + r.tts_actors[0] * r.cpus_per_tts_actor
        + r.asr_actors[0] * r.cpus_per_asr_actor
    )
    prepare = max(
        pipeline, r.scorer_actors[0] * r.cpus_per_scorer_actor, r.embed_actors[0] * r.cpus_per_embed_actor
    )
    workers = r.train_workers if isinstance(r.train_workers, int) else r.train_workers[0]
    arms = 2 if config.selection.compare_uniform else 1
    return teacher + max(3 * pipeline, arms * (prepare + workers * r.cpus_per_train_worker))


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


def _bundle(options: dict[str, Any]) -> dict[str, float]:
    bundle = {"CPU": float(options.get("num_cpus", 1))}
    if options.get("num_gpus"):
        bundle["GPU"] = float(options["num_gpus"])
    bundle.update({k: float(v) for k, v in options.get("resources", {}).items()})
    return bundle


def _min_actors(options: dict[str, Any]) -> int:
    return int(options["compute"].min_size)


def _replica_demand(what: str, options: dict[str, Any]) -> Demand:
    return Demand(
        what, _bundle(options["ray_actor_options"]), max(1, options["autoscaling_config"]["min_replicas"])
    )


def teacher_demand(config: RunConfig) -> Demand:
    return _replica_demand("teacher replica", teacher_deployment_options(config))


def student_demand(config: RunConfig) -> Demand:
    """What serving a student asks of a cluster (a RayService of salad_ray.serve, not part of a run)."""
    return _replica_demand("student replica", student_deployment_options(config))


def demands(config: RunConfig) -> list[Demand]:
    """Every resource request of a run, from the same functions the run's actors are made with."""
    r = config.resources
    out = []
    if not config.teacher.url:
        out.append(teacher_demand(config))
    workers = r.train_workers if isinstance(r.train_workers, int) else r.train_workers[0]
    out.append(
        Demand(
            "train worker", {"CPU": r.cpus_per_train_worker, **({"GPU": 1.0} if r.use_gpu else {})}, workers
        )
    )
    for what, options in (
        ("TTS actor", tts_stage_options(config)),
        ("ASR actor", asr_stage_options(config)),
        ("embedding actor", embed_stage_options(config)),
        ("scorer actor", scorer_stage_options(config)),
        ("light stage actor", light_stage_options(config)),
    ):
        out.append(Demand(what, _bundle(options), _min_actors(options)))
    out.append(Demand("evaluation task", _bundle(eval_task_options(config)), 1))
    return out
