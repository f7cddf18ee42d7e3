"""What the teacher's backends are built with (salad_ray.teacher.backends), without building them."""

from __future__ import annotations

import os

import pytest

from salad_ray.config import ConfigError, load_config
from salad_ray.teacher.backends import BackendSpec, cpu_binding


def test_all_binds_vllms_threads_to_every_cpu_this_process_may_use_and_holds_none_back():
    env = cpu_binding(2, "all")
    assert env["VLLM_CPU_OMP_THREADS_BIND"].split(",") == [str(c) for c in sorted(os.sched_getaffinity(0))]
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and env["VLLM_CPU_KVCACHE_SPACE"] == "2"


def test_other_bindings_reach_vllm_as_written():
    assert cpu_binding(1, "auto") == {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "auto"}
    assert cpu_binding(1, "0-3")["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"


def test_the_binding_comes_from_the_config_and_a_bad_one_names_the_key():
    spec = BackendSpec.from_config(load_config("local", overrides=["teacher.cpu_threads_bind=all"]))
    assert spec.cpu_threads_bind == "all"
    with pytest.raises(ConfigError, match="cpu_threads_bind"):
        load_config("local", overrides=["teacher.cpu_threads_bind=every core"])
