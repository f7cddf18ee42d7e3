"""The training jobs of a run: the warm-up, stage I and each arm's stage II, as :class:`StageJob` values.

A stage-II job up to step ``until`` reads round r's store (r = 1 .. ⌈until/S⌉, S steps per round)
from the round's first step, (r - 1)·S (salad_ray.train.mixture): each call of an arm extends the
stream of the calls before it. It saves the students of its rounds' exports (the active arm's
half-way students, salad_ray.rundir.round_exports) at their steps.
"""

from __future__ import annotations

from salad_ray.config import RunConfig
from salad_ray.rundir import HELDOUT, NATURAL, TEXT, Arm, Milestone, RunDir, round_exports, stage1, warmup
from salad_ray.train.loop import StageJob
from salad_ray.train.reporting import MetricsLog


def warmup_job(config: RunConfig, run: RunDir) -> StageJob:
    """The adapter-only warm-up on natural speech (``stages.warmup``; the LLM frozen)."""
    stages = config.stages
    return StageJob(
        name=warmup(stages).job,
        stores={"natural": [str(run.store(NATURAL))]},
        weights=stages.warmup.mix,
        total_steps=stages.warmup.steps,
        until_step=stages.warmup.steps,
        objective="alignment",
        lr_adapter=stages.warmup.lr,
        batch_size=stages.warmup.batch_size,
        heldout=str(run.store(HELDOUT)),
    )


def stage_job(
    config: RunConfig, run: RunDir, until: int, arm: Arm | None = None
) -> tuple[StageJob, dict[str, list[int]]]:
    """The job up to step ``until`` of stage I, or of an arm's stage II, and the step from which
    each store of a source is read (module docstring)."""
    stages = config.stages
    stores = {"natural": [str(run.store(NATURAL))], "text": [str(run.store(TEXT))]}
    common = {"heldout": str(run.store(HELDOUT))}
    if arm is None:
        job = StageJob(
            name=stage1(stages).job,
            stores=stores,
            weights=stages.stage1_mix,
            total_steps=stages.stage1_steps,
            until_step=until,
            init=str(run.student(warmup(stages))) if stages.warmup.steps else None,
            **common,
        )
        return job, {}
    per_round = stages.stage2_steps_per_round
    rounds = -(-until // per_round)
    stores["active"] = [str(run.store(name)) for name in arm.stores(rounds)]
    exports = [m for r in range(1, rounds + 1) for m in round_exports(arm, r, stages)]
    job = StageJob(
        name=arm.job,
        stores=stores,
        weights=stages.stage2_mix,
        total_steps=stages.stage2_rounds * per_round,
        until_step=until,
        init=str(run.student(stage1(stages))),
        lr_llm=stages.stage2_lr_llm,
        batch_size=stages.stage2_batch_size,
        exports={str(run.student(m)): m.step for m in exports},
        **common,
    )
    return job, {"active": [(r - 1) * per_round for r in range(1, rounds + 1)]}


def milestone_job(
    config: RunConfig, run: RunDir, milestone: Milestone, arm: Arm | None = None
) -> tuple[StageJob, dict[str, list[int]]]:
    """The job that trains to ``milestone`` (the warm-up, stage I or an arm's round end) and the step
    from which each store of a source is read."""
    if milestone == warmup(config.stages):
        return warmup_job(config, run), {}
    return stage_job(config, run, milestone.step, arm)


def metrics_log(config: RunConfig, run: RunDir, job: StageJob) -> MetricsLog:
    """The callback that records ``job``'s reports in the run's metrics.jsonl and its tracker."""
    return MetricsLog(job.name, run.metrics, config.train.tracker, run.tracking)
