"""The pre-flight check: each kind of configuration that cannot run is rejected before any work,
naming the key at fault; the presets that run here pass."""

from __future__ import annotations

import pytest
import yaml

from salad_ray import preflight
from salad_ray.config import ConfigError, RunConfig, load_config
from salad_ray.preflight import PreflightFailed, Problem
from salad_ray.resources import peak_cpus


def keys(problems: list[Problem]) -> set[str]:
    return {p.key for p in problems}


@pytest.mark.parametrize("preset", ["smoke", "local"])
def test_the_presets_that_run_here_pass(preset):
    config = load_config(preset)
    preflight.check(config, cluster={"CPU": peak_cpus(config)})


def test_paper_3b_without_natural_speech_is_rejected_by_its_mixtures():
    """paper-3b names its natural speech (Emilia-YODAS on the hub) and its mixtures draw on it; with
    data.natural removed and no stand-in, both mixtures are rejected."""
    assert preflight.mixture_problems(load_config("paper-3b")) == []
    problems = preflight.mixture_problems(load_config("paper-3b", overrides=["data.natural=[]"]))
    assert keys(problems) == {"stages.stage1_mix", "stages.stage2_mix"}
    assert all("set data.natural" in p.message for p in problems)


def test_paper_3b_names_its_sources_by_hub_id_and_an_offline_machine_cannot_reach_them(monkeypatch):
    """Every source of paper-3b is a hub dataset, none the fortunes default; offline, each is rejected
    as unreadable under its own key, with what to set."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    config = load_config("paper-3b")
    assert {"pool", "natural"} <= config.data.model_fields_set
    problems = preflight.data_problems(config)
    assert keys(problems) == {"data.text", "data.pool", "data.heldout.text", "data.natural[0]"}
    assert all("cannot be read" in p.message and "hub dataset id" in p.message for p in problems)


def test_a_pool_left_as_the_default_is_rejected_and_one_set_to_fortunes_is_not():
    tree = load_config("smoke").model_dump(mode="json", exclude_unset=True)
    del tree["data"]["pool"]
    problems = preflight.data_problems(RunConfig.model_validate(tree))
    assert keys(problems) == {"data.pool"} and "fortunes" in problems[0].message
    tree["data"]["pool"] = {"kind": "fortunes"}  # said on purpose
    assert preflight.data_problems(RunConfig.model_validate(tree)) == []


def test_a_mixture_naming_a_source_a_stage_cannot_have_is_rejected():
    config = load_config("smoke", overrides=["stages.stage1_mix={natural: 0.5, active: 0.5}"])
    (problem,) = preflight.mixture_problems(config)
    assert problem.key == "stages.stage1_mix" and "only stage II" in problem.message
    with pytest.raises(ConfigError, match="stage1_mix"):  # a source that does not exist at all
        load_config("smoke", overrides=["stages.stage1_mix={speech: 1.0}"])


def test_a_tts_resource_no_node_offers_is_rejected():
    config = load_config("smoke", overrides=["resources.tts.resources={tts: 1}"])
    (problem,) = preflight.resource_problems(config, {"CPU": 16.0})
    assert problem.key == "resources.tts.resources" and "'tts'" in problem.message
    assert preflight.resource_problems(config, {"CPU": 16.0, "tts": 4.0}) == []


def test_a_missing_gpu_names_the_key_that_asked_for_it():
    config = load_config("smoke", overrides=["resources.tts.gpus=0.5", "resources.gpus_per_eval_task=1"])
    tts, evaluation = preflight.resource_problems(config, {"CPU": 16.0, "GPU": 0.0})
    assert tts.key == "resources.tts.gpus" and "TTS actor" in tts.message
    assert evaluation.key == "resources.gpus_per_eval_task" and "evaluation task" in evaluation.message


def test_a_layout_without_the_tts_group_is_rejected(tmp_path):
    """The repository's KubeRay cluster with its tts group removed cannot place paper-3b's TTS actors."""
    from pathlib import Path

    manifest = yaml.safe_load((Path(__file__).parents[1] / "k8s" / "raycluster.yaml").read_text())
    groups = manifest["spec"]["workerGroupSpecs"]
    manifest["spec"]["workerGroupSpecs"] = [g for g in groups if g["groupName"] != "tts"]
    layout = tmp_path / "no-tts.yaml"
    layout.write_text(yaml.safe_dump(manifest))
    config = load_config("paper-3b")
    assert preflight.layout_problems(config, Path(__file__).parents[1] / "k8s" / "raycluster.yaml") == []
    problems = preflight.layout_problems(config, layout)
    assert problems and any("TTS actor" in p.message for p in problems)


def test_sources_and_models_that_cannot_be_read_are_named(tmp_path):
    config = load_config(
        "smoke",
        overrides=[
            "data.text={kind: fortunes, categories: [no-such-category]}",
            f"data.heldout.text={{kind: jsonl, path: {tmp_path / 'missing.jsonl'}}}",
            f"models.asr.source={tmp_path}",  # a directory without a config.json
        ],
    )
    with pytest.raises(PreflightFailed) as failed:
        preflight.check(config)
    assert keys(failed.value.problems) == {"data.text", "data.heldout.text", "models.asr"}
    assert "data.heldout.text: the jsonl source cannot be read" in str(failed.value)


def test_the_check_command_says_ok_or_names_the_key(capsys):
    """`python -m salad_ray.run --check`: starts nothing and writes no run directory."""
    from salad_ray.run import main

    local = ["--preset=smoke", "--check", "--address=local"]  # a new local instance's resources
    assert main(local) == 0
    assert "pre-flight: ok (smoke)" in capsys.readouterr().out
    assert main([*local, "--set=resources.tts.resources={tts: 1}"]) == 2
    assert "resources.tts.resources: no node of the cluster offers 'tts'" in capsys.readouterr().err
    assert main([*local, "--layout=k8s/nowhere.yaml"]) == 2
    assert "--layout: k8s/nowhere.yaml is not a file" in capsys.readouterr().err


def test_a_rejected_run_leaves_no_run_directory(tmp_path, capsys):
    from salad_ray.run import main

    run_dir = tmp_path / "run"
    assert main(["--preset=smoke", f"--run-dir={run_dir}", "--set=data.pool.categories=[no-such]"]) == 2
    assert "data.pool: the fortunes source cannot be read" in capsys.readouterr().err
    assert not run_dir.exists()


def test_a_random_model_whose_source_cannot_be_reached_is_rejected(monkeypatch):
    """A random model still takes its architecture from its source (paper-3b's Mimi with
    random_init keeps ``kyutai/mimi``): offline, that is a problem before any worker starts."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    config = load_config("paper-3b", overrides=["models.encoder.model.random_init=true"])
    problems = [p for p in preflight.model_problems(config) if p.key == "models.encoder.model"]
    assert len(problems) == 1 and "kyutai/mimi" in problems[0].message
    assert preflight.model_problems(load_config("smoke")) == []  # random, no source: nothing to load


def test_a_tracker_whose_package_is_missing_names_the_key(monkeypatch):
    import importlib.util

    config = load_config("smoke", overrides=["train.tracker=tensorboard"])
    assert preflight.tracker_problems(config) == []  # installed with the tracking extra
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )
    (problem,) = preflight.tracker_problems(config)
    assert problem.key == "train.tracker" and "salad-ray[tracking]" in problem.message
    assert preflight.tracker_problems(load_config("smoke")) == []  # none: nothing to install
