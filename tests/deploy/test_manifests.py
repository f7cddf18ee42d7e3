"""KubeRay manifests and ray up configs: valid against their schemas, and able to run their presets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from salad_ray.capacity import SERVED_APPS, check, check_files, kuberay_groups
from salad_ray.config import load_config
from salad_ray.resources import demands
from salad_ray.testing.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT.parent / "shared" / "kuberay-crds"
OVERLAYS = {"paper-3b": ROOT / "k8s/overlays/paper-3b", "paper-7b": ROOT / "k8s/overlays/paper-7b"}
MANIFESTS = [
    ROOT / "k8s/raycluster.yaml",
    ROOT / "k8s/rayservice-teacher.yaml",
    ROOT / "k8s/rayservice-student.yaml",
]


def strict(schema):
    """The CRD's OpenAPI schema with unknown fields refused, as `kubectl apply --validate=strict` does."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_schemas():
    """(apiVersion, kind) -> validator, from the KubeRay v1.7.0 CRDs."""
    assert CRDS.is_dir(), f"the KubeRay CRD schemas are expected in {CRDS} (../shared beside the repository)"
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            out[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = (
                jsonschema.Draft7Validator(schema)
            )
    return out


def all_documents() -> list[tuple[str, dict]]:
    docs = [(str(p.relative_to(ROOT)), d) for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]
    for name, overlay in OVERLAYS.items():
        docs += [(f"overlay {name}", d) for d in render(overlay)]
    return docs


def test_every_manifest_validates_against_the_kuberay_crds(crd_schemas):
    seen = set()
    for where, doc in all_documents():
        seen.add(doc["kind"])
        if doc["kind"] == "PersistentVolumeClaim":
            assert doc["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod mounts the run directory
            continue
        validator = crd_schemas[(doc["apiVersion"], doc["kind"])]
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{where} {doc['kind']}/{doc['metadata']['name']}: {errors[:5]}"
        if "serveConfigV2" in doc["spec"]:
            app = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"][0]
            assert app["import_path"] in SERVED_APPS
    assert {"RayCluster", "RayJob", "RayService", "PersistentVolumeClaim"} <= seen


def test_a_wrong_field_is_caught(crd_schemas):
    doc = yaml.safe_load((ROOT / "k8s/raycluster.yaml").read_text())
    doc["spec"]["workerGroupSpecs"][1]["maxReplica"] = doc["spec"]["workerGroupSpecs"][1].pop("maxReplicas")
    assert list(crd_schemas[("ray.io/v1", "RayCluster")].iter_errors(doc))


def test_layouts_have_the_designed_groups():
    for where, doc in all_documents():
        if doc["kind"] not in ("RayCluster", "RayJob"):
            continue
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        assert spec["enableInTreeAutoscaling"] and spec["autoscalerOptions"]["version"] == "v2", where
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", where  # the head does no work
        groups = {g.name: g for g in kuberay_groups(spec)}
        tts = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "tts")
        assert tts["minReplicas"] == 0 and tts["maxReplicas"] > 0
        # a tts pod's GPU is its tts units' alone: offered as a GPU, a whole-GPU ask could take it
        assert groups["tts"].resources["tts"] > 0 and groups["tts"].resources["GPU"] == 0
        assert groups["gpu"].resources["GPU"] > 0
    entrypoints = {
        name: next(d for d in render(path) if d["kind"] == "RayJob")["spec"]["entrypoint"]
        for name, path in OVERLAYS.items()
    }
    for name, entry in entrypoints.items():
        assert (
            f"--preset {name} " in entry
            and entry.startswith("python -m salad_ray.run")
            and "--resume" in entry
        )


def test_every_cluster_config_validates_against_ray_schema():
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    files = sorted((ROOT / "clusters").glob("*.yaml"))
    assert {f.name for f in files} >= {"aws.yaml", "onprem.yaml"}
    for path in files:
        config = yaml.safe_load(path.read_text())
        jsonschema.validate(config, schema)
    providers = {yaml.safe_load(p.read_text())["provider"]["type"] for p in files}
    assert {"aws", "local"} <= providers


@pytest.mark.parametrize("preset", sorted(OVERLAYS))
def test_the_shipped_layouts_can_run_the_paper_presets(preset, tmp_path):
    config = load_config(preset)
    rendered = tmp_path / "overlay.yaml"
    rendered.write_text(yaml.safe_dump_all(render(OVERLAYS[preset])))
    files = [rendered, *MANIFESTS, ROOT / "clusters/aws.yaml"]
    results = check_files(config, files)
    assert len([r for r in results.values() if r is not None]) == len(files)  # one layout each
    assert all(problems == [] for problems in results.values() if problems is not None), results


def test_the_check_fails_without_the_tts_group():
    config = load_config("paper-3b")
    doc = yaml.safe_load((ROOT / "k8s/raycluster.yaml").read_text())
    assert check(kuberay_groups(doc["spec"]), demands(config)) == []
    no_tts = copy.deepcopy(doc["spec"])
    no_tts["workerGroupSpecs"] = [g for g in no_tts["workerGroupSpecs"] if g["groupName"] != "tts"]
    problems = check(kuberay_groups(no_tts), demands(config))
    assert any("no node group can hold a TTS actor" in p for p in problems)
    assert any("tts in all" in p for p in problems)
    # more train workers at once than every GPU of the layout at full scale (4 x 8; tts pods offer none)
    crowded = load_config("paper-3b", overrides=["resources.train_workers=[48, 64]"])
    assert any("48 train workers" in p for p in check(kuberay_groups(doc["spec"]), demands(crowded)))


def test_the_check_fails_when_a_tts_group_offers_its_gpu_to_all():
    """The rehearsal found it: tts pods offering their GPU as a GPU lose it to a teacher replica."""
    doc = yaml.safe_load((ROOT / "k8s/raycluster.yaml").read_text())
    tts = next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == "tts")
    tts["rayStartParams"]["num-gpus"] = "1"
    (problem,) = check(kuberay_groups(doc["spec"]), demands(load_config("paper-3b")))
    assert problem.startswith("the tts group offers 1 GPU beside tts: a teacher replica could take it")


def test_a_rayservice_is_checked_against_what_it_serves(tmp_path):
    """The student's RayService needs room for a student replica (by default a teacher replica's GPU)."""
    config = load_config("paper-3b")
    doc = yaml.safe_load((ROOT / "k8s/rayservice-student.yaml").read_text())
    served = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"][0]
    assert served["import_path"] == "salad_ray.serve.deployment:build_app"
    assert served["args"]["student"].startswith("/runs/")  # the run volume every pod mounts
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = "0"
    path = tmp_path / "cpu-only.yaml"
    path.write_text(yaml.safe_dump(doc))
    (problems,) = check_files(config, [path]).values()
    assert any("no node group can hold a student replica" in p for p in problems), problems
