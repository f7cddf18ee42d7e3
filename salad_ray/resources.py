"""Every resource request of a run, in one place, derived from ``config.resources``.

Actors, deployments and train workers ask for what these functions return; nothing else in the code
names CPU, GPU or custom-resource amounts. The deployment check (k8s manifests) reads the same
functions, so a cluster layout that could never satisfy a run is caught before it is applied.
"""

from __future__ import annotations

from typing import Any

from salad_ray.config import RunConfig


def teacher_deployment_options(config: RunConfig) -> dict[str, Any]:
    """Ray Serve options of the teacher deployment: replica resources, autoscaling, concurrency."""
    r, t = config.resources, config.teacher
    return {
        "ray_actor_options": {"num_cpus": r.cpus_per_teacher_replica, "num_gpus": r.gpus_per_teacher_replica},
        "autoscaling_config": {
            "min_replicas": t.replicas.min_replicas,
            "max_replicas": t.replicas.max_replicas,
            "initial_replicas": max(1, t.replicas.min_replicas),
            "target_ongoing_requests": t.replicas.target_ongoing_requests,
        },
        "max_ongoing_requests": t.max_ongoing_requests,
    }


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
    options: dict[str, Any] = {"compute": _pool(r.asr_actors), "num_cpus": r.cpus_per_asr_actor}
    if r.gpus_per_asr_actor:
        options["num_gpus"] = r.gpus_per_asr_actor
    return options


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
