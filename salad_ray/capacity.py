"""Can a cluster layout ever run a configuration? Node groups against the run's resource demands.

    python -m salad_ray.capacity --preset paper-3b k8s/base/rayjob.yaml clusters/aws.yaml ...
    python -m salad_ray.capacity --preset smoke --peak-cpus    # the logical CPUs a run needs at once

The demands are :func:`salad_ray.resources.demands` (the very options the run's actors, replicas,
workers and tasks are created with). The node groups are read from

* KubeRay manifests (RayCluster, RayJob's ``rayClusterSpec``, RayService's ``rayClusterConfig``):
  per group, Ray's logical resources as KubeRay sets them: ``rayStartParams`` ``num-cpus``,
  ``num-gpus`` and ``resources`` (a JSON map of custom resources), else the container's CPU and
  ``nvidia.com/gpu`` limits; a group scales to ``maxReplicas`` (the head group is one node);
* ``ray up`` configs: ``available_node_types`` with their ``resources`` and ``max_workers``.

A RayService runs its Serve applications and nothing else, so it is checked against their replicas
alone (:data:`SERVED_APPS`: the teacher's, a served student's); every other layout against the
run's demands. A layout passes when, for every demand, (1) some group's node holds one of it, (2)
the groups whose nodes hold it can hold ``at_least`` of them at full scale, and, over all demands
together, (3) the cluster at full scale has every resource the minimums add up to. These are necessary conditions,
not a scheduler: a layout that fails them can never run the configuration.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from salad_ray.config import ConfigError, RunConfig, add_config_arguments, load_config
from salad_ray.resources import Demand, demands, peak_cpus, student_demand, teacher_demand

# What each Serve application a RayService may run asks of its cluster, by import path.
SERVED_APPS = {
    "salad_ray.teacher.deployment:build_app": teacher_demand,
    "salad_ray.serve.deployment:build_app": student_demand,
}


@dataclass(frozen=True)
class NodeGroup:
    name: str
    resources: dict[str, float]  # Ray logical resources of one node
    max_nodes: int


def _quantity(value) -> float:
    """A Kubernetes quantity (``8``, ``500m``, ``"2"``) as a number."""
    text = str(value).strip()
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _kuberay_group(name: str, spec: dict, max_nodes: int) -> NodeGroup:
    params = spec.get("rayStartParams") or {}
    containers = spec["template"]["spec"]["containers"]
    limits = (containers[0].get("resources") or {}).get("limits") or {}
    requests = (containers[0].get("resources") or {}).get("requests") or {}
    resources: dict[str, float] = {}
    cpu = params.get("num-cpus", limits.get("cpu", requests.get("cpu")))
    if cpu is not None:
        resources["CPU"] = _quantity(cpu)
    gpu = params.get("num-gpus", limits.get("nvidia.com/gpu"))
    if gpu is not None:
        resources["GPU"] = _quantity(gpu)
    if "resources" in params:
        resources.update(_custom_resources(name, params["resources"]))
    return NodeGroup(name, resources, max_nodes)


def _custom_resources(group: str, value: str) -> dict[str, float]:
    """rayStartParams ``resources`` as KubeRay documents it, ``'"{\\"tts\\": 4}"'``: a JSON map quoted
    for the shell that runs ``ray start --resources=...``."""
    text = value.strip()
    if text[:1] == text[-1:] == '"':
        text = text[1:-1].replace('\\"', '"')
    try:
        custom = json.loads(text)
        return {str(k): float(v) for k, v in custom.items()}
    except (ValueError, AttributeError, TypeError) as e:
        raise ValueError(
            f"group {group}: rayStartParams.resources {value!r} is not a JSON map ({e})"
        ) from None


def kuberay_groups(cluster_spec: dict) -> list[NodeGroup]:
    """Node groups of a RayCluster spec."""
    groups = [_kuberay_group("head", cluster_spec["headGroupSpec"], 1)]
    for worker in cluster_spec.get("workerGroupSpecs") or []:
        if not worker.get("suspend"):
            groups.append(_kuberay_group(worker["groupName"], worker, int(worker["maxReplicas"])))
    return groups


def ray_up_groups(config: dict) -> list[NodeGroup]:
    """Node groups of a ``ray up`` cluster config."""
    head = config.get("head_node_type")
    return [
        NodeGroup(
            name,
            {k: float(v) for k, v in (node.get("resources") or {}).items()},
            1 if name == head else int(node.get("max_workers", config.get("max_workers", 0))),
        )
        for name, node in config["available_node_types"].items()
    ]


@dataclass(frozen=True)
class Layout:
    name: str  # file:kind/name
    groups: list[NodeGroup]
    # The import paths of a RayService's Serve applications: it runs those and nothing else.
    services: tuple[str, ...] = ()


def layouts(path: Path) -> list[Layout]:
    """Every cluster layout a file describes. A ``ray up`` config of the ``local`` provider has none:
    its machines state their resources when Ray starts on them."""
    out = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        if "available_node_types" in doc:
            out.append(Layout(str(path), ray_up_groups(doc)))
            continue
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        spec = {
            "RayCluster": lambda d: d["spec"],
            "RayJob": lambda d: d["spec"].get("rayClusterSpec"),
            "RayService": lambda d: d["spec"].get("rayClusterConfig"),
        }.get(kind, lambda d: None)(doc)
        if spec:
            out.append(Layout(f"{path}:{kind}/{name}", kuberay_groups(spec), _services(doc)))
    return out


def _services(doc: dict) -> tuple[str, ...]:
    if doc.get("kind") != "RayService":
        return ()
    apps = yaml.safe_load(doc["spec"].get("serveConfigV2") or "{}").get("applications") or []
    return tuple(app["import_path"] for app in apps)


def _fits(node: dict[str, float], bundle: dict[str, float]) -> int:
    """How many bundles one node holds."""
    counts = [math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0]
    return min(counts) if counts else 0


def check(groups: list[NodeGroup], needs: list[Demand]) -> list[str]:
    """What makes the layout unable to run the demands (empty: it can)."""
    problems = []
    describe = ", ".join(f"{g.name} {g.resources} x{g.max_nodes}" for g in groups)
    for need in needs:
        capacity = sum(_fits(g.resources, need.bundle) * g.max_nodes for g in groups)
        if not any(_fits(g.resources, need.bundle) for g in groups if g.max_nodes > 0):
            problems.append(f"no node group can hold a {need.what} {need.bundle} (groups: {describe})")
        elif capacity < need.at_least:
            problems.append(
                f"{need.at_least} {need.what}s {need.bundle} must run at once; the groups hold {capacity}"
            )
    # A group that offers a custom resource (tts) is kept for the actors asking it: GPUs it also offers
    # would go to the first whole-GPU ask once the other groups are full, and its own actors then wait.
    custom = {k for need in needs for k in need.bundle if k not in ("CPU", "GPU")}
    for g in groups:
        kept = sorted(custom & g.resources.keys())
        takers = [
            need.what
            for need in needs
            if "GPU" in need.bundle and not set(kept) & need.bundle.keys() and _fits(g.resources, need.bundle)
        ]
        if kept and g.resources.get("GPU", 0) > 0 and takers:
            problems.append(
                f"the {g.name} group offers {g.resources['GPU']:g} GPU beside {', '.join(kept)}: a "
                f"{takers[0]} could take it and leave the {kept[0]} actors waiting; give it num-gpus 0 "
                f"(an actor's share of that GPU is its {kept[0]} unit)"
            )
    total: dict[str, float] = {}
    for g in groups:
        for k, v in g.resources.items():
            total[k] = total.get(k, 0.0) + v * g.max_nodes
    for key in sorted({k for need in needs for k in need.bundle}):
        wanted = sum(need.bundle.get(key, 0.0) * need.at_least for need in needs)
        if wanted > total.get(key, 0.0) + 1e-9:
            problems.append(
                f"the minimums need {wanted:g} {key} in all; the cluster has {total.get(key, 0):g}"
            )
    return problems


def check_files(config: RunConfig, paths: list[Path]) -> dict[str, list[str] | None]:
    """Problems per cluster layout found in ``paths`` (None: a file with no layout to check)."""
    needs = demands(config)
    out: dict[str, list[str] | None] = {}
    for path in paths:
        found = layouts(path)
        if not found:
            out[str(path)] = None
        for layout in found:
            unknown = [p for p in layout.services if p not in SERVED_APPS]
            if unknown:
                out[layout.name] = [f"unknown Serve applications {unknown}; known: {sorted(SERVED_APPS)}"]
                continue
            wanted = [SERVED_APPS[p](config) for p in layout.services] if layout.services else needs
            out[layout.name] = check(layout.groups, wanted)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salad_ray.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="KubeRay manifests and ray up configs")
    parser.add_argument(
        "--peak-cpus",
        action="store_true",
        help="print the logical CPUs the run needs at once (for `ray start --head --num-cpus`) and exit",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if not args.files and not args.peak_cpus:
        parser.error("name the layout files to check, or ask for --peak-cpus")
    try:
        config = load_config(args.preset, args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.peak_cpus:
        print(math.ceil(peak_cpus(config)))
        return 0
    failed = False
    for name, problems in check_files(config, args.files).items():
        if problems is None:
            print(f"skip {name}: no node groups declared (a local-provider cluster, or not a cluster)")
            continue
        print(f"{'FAIL' if problems else 'ok  '} {name}")
        for problem in problems:
            print(f"       {problem}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
