"""The Ray cluster a run works on: joined when one is named or running, else a local instance.

The address is ``--address``, else ``$RAY_ADDRESS`` (which ``ray job submit`` sets for its
entrypoint), else a cluster running on this machine (``ray start``), else ``local``: a new local
instance sized for the run (:func:`salad_ray.resources.local_cpus`). Before connecting, Ray's
address file is removed if it names a cluster that is gone (:mod:`salad_ray.local_cluster`), so
neither the driver nor Ray's CLI after it retries a dead address.
"""

from __future__ import annotations

import os
from pathlib import Path

from salad_ray import preflight
from salad_ray.config import RunConfig
from salad_ray.console import log
from salad_ray.preflight import PreflightFailed

LOCAL = "local"


def target_address(address: str | None = None) -> str:
    """Where a run would go: ``address``, else $RAY_ADDRESS, else a running cluster, else ``local``."""
    from salad_ray.local_cluster import running_cluster

    return address or os.environ.get("RAY_ADDRESS") or running_cluster() or LOCAL


def connect(config: RunConfig, address: str | None = None) -> None:
    """Join the cluster of :func:`target_address` (or start a local instance), then check it can run
    the whole loop: its CPUs, and on a local instance every resource the actors ask for (a joined
    cluster may autoscale: ``--check --layout`` checks its layout)."""
    import ray

    from salad_ray.local_cluster import forget_dead_cluster
    from salad_ray.resources import check_cluster, local_cpus

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if (dead := forget_dead_cluster()) is not None:
        log.info("forgot the address of a Ray cluster that is gone (%s)", dead)
    address = target_address(address)
    if not ray.is_initialized():
        if address == LOCAL:
            cpus = local_cpus(config)
            ray.init(address=LOCAL, num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            log.info("started a local Ray instance (%s logical CPUs)", cpus)
        else:
            ray.init(address=address, log_to_driver=False)
            log.info("connected to the Ray cluster at %s", ray.get_runtime_context().gcs_address)
    check_cluster(config, ray.cluster_resources().get("CPU", 0))
    if address == LOCAL and (problems := preflight.resource_problems(config, ray.cluster_resources())):
        raise PreflightFailed(problems)


def check(config: RunConfig, address: str | None = None, layout: Path | None = None) -> None:
    """The pre-flight alone, starting nothing: the resources are checked against ``layout`` when
    given, else against the local instance a run would start; a cluster it would join gets the CPU
    check only (it may autoscale: check its layout)."""
    from salad_ray.resources import check_cluster, local_cpus

    if layout is not None:
        preflight.check(config, layout=layout)
        return
    address = target_address(address)
    if address == LOCAL:
        import torch

        cluster = {"CPU": float(local_cpus(config)), "GPU": float(torch.cuda.device_count())}
        check_cluster(config, cluster["CPU"])
        preflight.check(config, cluster=cluster)
        return
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    check_cluster(config, ray.cluster_resources().get("CPU", 0))
    preflight.check(config)
