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
