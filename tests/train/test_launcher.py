"""Distillation on Ray Train with 2 CPU workers: learning, exact resume, worker loss, DDP and FSDP."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from salad_ray.config import TextSource, load_config
from salad_ray.corpus import read_texts
from salad_ray.pipeline.dataflow import run_texts, text_jobs
from salad_ray.pipeline.shards import ShardStore
from salad_ray.testing.processes import free_port
from salad_ray.train import state
from salad_ray.train.launcher import global_batch, train_stage
from salad_ray.train.loop import StageJob
from salad_ray.train.reporting import MetricsLog

pytestmark = pytest.mark.slow


def config_with(*overrides):
    return load_config(
        "smoke",
        overrides=[
            f"teacher.http_port={free_port()}",
            "teacher.app_name=train-teacher",
            "teacher.route_prefix=/train",
            "resources.train_workers=2",
            "train.warmup_steps=2",
            "train.eval_every=0",
            "train.log_every=2",
            "train.checkpoint_every=2",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def stores(ray_cluster, tmp_path_factory):
    """A fixed tiny data set: 4 spoken samples ("natural") and 4 text-only samples."""
    root = tmp_path_factory.mktemp("data")
    config = config_with()
    natural, text = ShardStore(root / "natural"), ShardStore(root / "text")
    spoken = read_texts(
        TextSource(kind="fortunes", categories=["computers"], min_words=10, max_words=25, limit=4)
    )
    written = read_texts(TextSource(kind="gcide", min_words=8, max_words=30, limit=4))
    assert (
        run_texts(
            config,
            text_jobs(spoken, config, voices=["en-us"], source="natural"),
            natural,
            name="n",
            check_asr=False,
        ).written
        == 4
    )
    assert (
        run_texts(
            config, text_jobs(written, config, voices=[], source="text"), text, name="t", speech=False
        ).written
        == 4
    )
    return {"natural": [str(root / "natural")], "text": [str(root / "text")]}


def job(stores, tmp_path, name, total, until, weights=None, **kwargs):
    return StageJob(
        name=name,
        stores=stores,
        weights=weights or {"natural": 2 / 3, "text": 1 / 3},
        total_steps=total,
        until_step=until,
        **kwargs,
    )


def log(tmp_path, name, **kwargs) -> MetricsLog:
    return MetricsLog(name, tmp_path / f"{name}.jsonl", **kwargs)


def metrics(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def newest_checkpoint_step(storage: Path) -> int:
    """The step of the newest checkpoint on disk, registered with Ray Train or not yet."""
    return max(
        (state.Position.read(p.parent).step for p in storage.glob(f"*/{state.POSITION_FILE}")), default=0
    )


def adapter_weights(result) -> dict[str, torch.Tensor]:
    return load_file(result.student / "adapter.safetensors")


def assert_same_weights(a, b, atol=1e-5):
    wa, wb = adapter_weights(a), adapter_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=1e-4)


@pytest.fixture(scope="module")
def uninterrupted(stores, tmp_path_factory):
    """6 steps on 2 workers (DDP), never stopped: the reference run."""
    tmp = tmp_path_factory.mktemp("reference")
    config = config_with()
    result = train_stage(
        config, tmp / "train", job(stores, tmp, "reference", 6, 6), log=log(tmp, "reference")
    )
    return config, result


def test_loss_falls_on_a_fixed_tiny_set(stores, tmp_path):
    config = config_with(
        "train.lr_adapter=3e-3", "train.lr_llm=1e-3", "train.log_every=4", "train.checkpoint_every=12"
    )
    spoken_only = {"natural": 1.0}  # the 4 spoken samples, over and over
    tracked = log(tmp_path, "fit", tracker="tensorboard", tracking=tmp_path / "tracking")
    result = train_stage(
        config, tmp_path / "train", job(stores, tmp_path, "fit", 12, 12, spoken_only), log=tracked
    )
    losses = [m["loss"] for m in metrics(tmp_path / "fit.jsonl")]
    assert len(losses) == 3
    # the tracker saw the same reports, at the same steps
    events = EventAccumulator(str(tmp_path / "tracking" / "tensorboard" / "fit"))
    events.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("loss")] == list(
        zip([4, 8, 12], losses, strict=True)
    )
    assert losses[-1] < 0.4 * losses[0], losses  # the student learns to match the teacher
    assert result.metrics["step"] == 12 and result.metrics["samples"] == 12 * global_batch(config)
    assert 0 < result.metrics["mfu"] < 1 and result.metrics["tokens_per_s"] > 0


def test_stop_and_resume_matches_an_uninterrupted_run(stores, uninterrupted, tmp_path):
    config, reference = uninterrupted
    first = train_stage(
        config, tmp_path / "train", job(stores, tmp_path, "resumed", 6, 3), log=log(tmp_path, "resumed")
    )
    assert state.Position.read(first.checkpoint).step == 3
    # Resume on a different worker count: elastic (1, 2) with room for only one worker.
    elastic = config.model_copy(deep=True)
    elastic.resources.train_workers = (1, 2)
    elastic.resources.cpus_per_train_worker = 4.0
    second = train_stage(
        elastic, tmp_path / "train", job(stores, tmp_path, "resumed", 6, 6), log=log(tmp_path, "resumed")
    )
    end, ref = state.Position.read(second.checkpoint), state.Position.read(reference.checkpoint)
    assert (
        (end.step, end.samples, end.seen)
        == (ref.step, ref.samples, ref.seen)
        == (6, 6 * global_batch(config), ref.seen)
    )
    assert_same_weights(second, reference, atol=1e-4)
    steps = [m["step"] for m in metrics(tmp_path / "resumed.jsonl")]
    assert steps == [2, 3, 4, 6]  # nothing redone: 1-3 on two workers, 4-6 on one
    # called again, the finished job starts no workers: Ray Train's stored result comes back
    again = train_stage(elastic, tmp_path / "train", job(stores, tmp_path, "resumed", 6, 6))
    assert again.checkpoint == second.checkpoint and again.metrics["step"] == 6
    assert len(metrics(tmp_path / "resumed.jsonl")) == len(steps)


def test_a_killed_worker_costs_only_the_steps_since_the_last_checkpoint(stores, tmp_path):
    config = config_with("train.max_failures=2", "train.log_every=1")
    storage = tmp_path / "train"
    killed = []

    def kill_after_first_checkpoint():
        from ray._private.state import actors

        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            logged_file = tmp_path / "killed.jsonl"  # written once Ray Train registered a report
            if newest_checkpoint_step(storage / "killed") >= 2 and logged_file.is_file():
                workers = [
                    a
                    for a in actors().values()
                    if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"
                ]
                if workers:
                    checkpoint = newest_checkpoint_step(storage / "killed")
                    os.kill(workers[-1]["Pid"], signal.SIGKILL)
                    lines = logged_file.read_text().splitlines()
                    logged = max(json.loads(line)["step"] for line in lines if line.endswith("}"))
                    # the newest checkpoint on disk may not be registered with Ray Train yet when the
                    # worker dies; the one before it is: the kill costs at most the steps since then
                    killed.append(logged - checkpoint + config.train.checkpoint_every)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    result = train_stage(config, storage, job(stores, tmp_path, "killed", 8, 8), log=log(tmp_path, "killed"))
    killer.join(timeout=1)
    assert killed, "no worker was killed"
    assert result.metrics["step"] == 8 and result.metrics["samples"] == 8 * global_batch(config)
    steps = [m["step"] for m in metrics(tmp_path / "killed.jsonl")]
    redone = len(steps) - len(set(steps))
    assert steps[-1] == 8 and set(steps) == set(range(1, 9))
    assert 1 <= redone <= killed[0]


def test_fsdp_trains_the_same_student_as_ddp(stores, uninterrupted, tmp_path):
    _, reference = uninterrupted
    config = config_with("train.strategy=fsdp")
    result = train_stage(
        config, tmp_path / "train", job(stores, tmp_path, "fsdp", 6, 6), log=log(tmp_path, "fsdp")
    )
    assert result.metrics["step"] == 6
    assert_same_weights(result, reference, atol=1e-4)
