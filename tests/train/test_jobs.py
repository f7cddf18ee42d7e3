"""A run's training jobs (salad_ray.train.jobs), without Ray: each stage-II call extends its arm's
stream, round r reads its own selection, and the active arm's calls save the half-way students."""

from __future__ import annotations

import pytest

from salad_ray.rundir import ACTIVE, UNIFORM, RunDir, half_way
from salad_ray.train import launcher
from salad_ray.train.jobs import stage_job
from salad_ray.train.mixture import SampleRef


@pytest.mark.parametrize("arm", [ACTIVE, UNIFORM])
def test_each_training_call_extends_the_stream_and_round_r_reads_its_selection(
    arm, local_config, tmp_path, monkeypatch
):
    """Every call of an arm (the local preset's rounds) reads the stores of the rounds it reaches,
    round r's from step (r - 1)·S on; no call changes the steps an earlier one trained, and round r's
    steps read all of round r's selection (sizes below its expected number of active positions)."""
    mix = local_config.stages.stage2_mix
    stage2_batch = launcher.global_batch(local_config, stage_job(local_config, RunDir(tmp_path), 1, arm)[0])
    active = local_config.stages.stage2_steps_per_round * stage2_batch * mix["active"] / sum(mix.values())
    sizes = {"natural": 30, "text": 30}
    sizes |= {arm.store(r): int(active * f) for r, f in ((1, 0.6), (2, 0.45), (3, 0.65))}

    def pool_refs(store, source: str) -> list[SampleRef]:
        name = store.root.name
        return [SampleRef(source, f"{name}.parquet", row, f"{name}-{row}") for row in range(sizes[name])]

    monkeypatch.setattr(launcher, "pool_refs", pool_refs)
    per_step = stage2_batch * local_config.train.grad_accum
    per_round = local_config.stages.stage2_steps_per_round * per_step
    trained: list[SampleRef] = []
    stages = local_config.stages
    for reached in (1, 2, 3):  # one call per round
        until = reached * stages.stage2_steps_per_round
        job, starts = stage_job(local_config, RunDir(tmp_path), until, arm)
        halves = [half_way(r, stages) for r in range(1, reached + 1) if r < 3] if arm == ACTIVE else []
        assert job.exports == {str(RunDir(tmp_path).student(m)): m.step for m in halves}
        assert job.stores["active"] == [str(tmp_path / "data" / arm.store(r)) for r in range(1, reached + 1)]
        assert starts == {"active": [(r - 1) * stages.stage2_steps_per_round for r in range(1, reached + 1)]}
        stream = launcher.stage_stream(local_config, job, starts)
        assert stream[: len(trained)] == trained
        trained = stream[: until * per_step]
    for r in (1, 2, 3):
        window = trained[(r - 1) * per_round : r * per_round]
        reads = {ref.sample_id for ref in window if ref.source == "active"}
        assert {f"{arm.store(r)}-{row}" for row in range(sizes[arm.store(r)])} <= reads
