"""Ray resource requests built from the run config (salad_ray/resources.py)."""

from __future__ import annotations

import pytest

from salad_ray.config import StudentServerConfig, load_config
from salad_ray.resources import (
    demands,
    pool_stage_options,
    student_deployment_options,
    teacher_deployment_options,
)


@pytest.mark.parametrize(
    "section, options_of",
    [("teacher", teacher_deployment_options), ("student_server", student_deployment_options)],
)
def test_serve_deployment_options_come_from_the_config(section, options_of):
    """Replica resources, autoscaling and concurrency of a Serve deployment, each from its section."""
    config = load_config(
        "paper-3b",
        overrides=[
            f"{section}.replicas={{min_replicas: 2, max_replicas: 6, target_ongoing_requests: 3}}",
            f"{section}.max_ongoing_requests=9",
        ],
    )
    options = options_of(config)
    assert options["ray_actor_options"]["num_gpus"] == 1.0  # a whole GPU per replica
    assert options["autoscaling_config"] == {
        "min_replicas": 2,
        "max_replicas": 6,
        "initial_replicas": 2,
        "target_ongoing_requests": 3.0,
    }
    assert options["max_ongoing_requests"] == 9


def test_gpu_shares_of_the_teacher_and_the_student():
    """A served student's GPU share is a teacher replica's unless it has its own."""
    teacher_half = load_config("paper-3b", overrides=["resources.gpus_per_teacher_replica=0.5"])
    assert teacher_deployment_options(teacher_half)["ray_actor_options"]["num_gpus"] == 0.5
    assert student_deployment_options(teacher_half)["ray_actor_options"]["num_gpus"] == 0.5
    student_half = load_config("paper-3b", overrides=["resources.gpus_per_student_replica=0.5"])
    assert student_deployment_options(student_half)["ray_actor_options"]["num_gpus"] == 0.5
    assert teacher_deployment_options(student_half)["ray_actor_options"]["num_gpus"] == 1.0
    assert StudentServerConfig().http_host == "127.0.0.1"


def test_every_actor_pool_is_one_type_and_its_demand_names_the_keys_that_ask():
    """paper-3b's pools: Ray Data options from one function, and each non-CPU resource of a
    demand traced to the config key that asks for it (what the pre-flight check names)."""
    config = load_config("paper-3b", overrides=["resources.scorer={actors: [2, 4], cpus: 8, gpus: 1.0}"])
    tts = pool_stage_options(config.resources.tts)
    assert (tts["compute"].min_size, tts["compute"].max_size) == (1, 32)
    assert tts["num_cpus"] == 2 and tts["resources"] == {"tts": 1.0} and "num_gpus" not in tts
    assert pool_stage_options(config.resources.asr)["num_gpus"] == 0.25
    by_kind = {d.what: d for d in demands(config)}
    assert by_kind["TTS actor"].bundle == {"CPU": 2.0, "tts": 1.0}
    assert by_kind["TTS actor"].keys["tts"] == "resources.tts.resources"
    assert by_kind["scorer actor"].at_least == 2
    assert by_kind["scorer actor"].keys["GPU"] == "resources.scorer.gpus"
    assert by_kind["teacher replica"].keys["GPU"] == "resources.gpus_per_teacher_replica"


def test_a_cluster_too_small_stops_the_run_with_the_number_to_start_the_head_with(
    ray_cluster, tmp_path, capsys
):
    """The test session's Ray instance has 6 logical CPUs; the smoke preset needs 7 at once."""
    from salad_ray.capacity import main as capacity
    from salad_ray.run import main as run

    assert capacity(["--preset", "smoke", "--peak-cpus"]) == 0
    assert capsys.readouterr().out.strip() == "7"
    assert run(["--preset=smoke", f"--run-dir={tmp_path / 'run'}"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("error: the Ray cluster has 6 CPUs but this run needs 7 at once")
    assert "`ray start --head --num-cpus=7`" in said
