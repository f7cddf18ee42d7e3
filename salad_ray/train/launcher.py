"""The TorchTrainer of one training stage: data stream, workers, checkpoints, failures.

``train_stage`` runs a stage up to ``job.until_step`` of its ``job.total_steps``-step schedule.
Calling it again with the same name and a larger ``until_step`` continues the same run from its
latest checkpoint (Ray Train restores the checkpoint manager from storage, and hands its latest
checkpoint to the workers and to the :class:`ray.train.Result`): the schedule, the data stream and
the optimizer carry on exactly. A later call may also give a source more stores,
each read from a step the earlier calls did not reach (``starts``): the stream before that step
stays as it was (salad_ray.train.mixture), so stage II grows by a round's store per round.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from salad_ray.config import RunConfig
from salad_ray.pipeline.shards import ShardStore
from salad_ray.resources import max_train_workers, train_scaling_config
from salad_ray.train import state
from salad_ray.train.loop import StageJob, train_loop_per_worker
from salad_ray.train.mixture import SampleRef, Segment, pool_refs, segmented_stream
from salad_ray.train.reporting import MetricsLog


@dataclass(frozen=True)
class StageResult:
    checkpoint: Path  # the latest checkpoint; its student/ is the trained student
    metrics: dict

    @property
    def student(self) -> Path:
        return self.checkpoint / "student"


def global_batch(config: RunConfig, job: StageJob | None = None) -> int:
    """Samples per micro-step over all workers: the job's (else ``train.batch_size``) per worker,
    times the largest worker count of the range, so it stays fixed when an elastic run shrinks."""
    per_worker = job.batch_size if job is not None and job.batch_size else config.train.batch_size
    return per_worker * max_train_workers(config)


def stage_stream(
    config: RunConfig, job: StageJob, starts: dict[str, list[int]] | None = None
) -> list[SampleRef]:
    """The whole stream of a stage's ``total_steps``: the j-th store of a source is a segment
    readable from step ``starts[source][j]`` (default 0) on, i.e. from stream position
    step·G·A (G samples per micro-step, A micro-steps per step)."""
    per_step = global_batch(config, job) * config.train.grad_accum
    starts = starts or {}
    sources = {
        src: [
            Segment(pool_refs(ShardStore(root), src), step * per_step)
            for root, step in zip(roots, starts.get(src, [0] * len(roots)), strict=True)
        ]
        for src, roots in job.stores.items()
    }
    return segmented_stream(sources, job.weights, job.total_steps * per_step, config.train.seed)


def stored_result(run_storage: Path) -> StageResult | None:
    """What earlier calls of a job left in its storage folder (``<storage>/<job name>``): Ray
    Train's record of the run (its latest checkpoint and report), or None before the first
    checkpoint."""
    from ray.train import Result

    if not run_storage.is_dir():
        return None
    try:
        result = Result.from_path(str(run_storage.resolve()))
    except RuntimeError:  # the folder holds no run snapshot: no checkpoint was ever registered
        return None
    if result.checkpoint is None:
        return None
    return StageResult(Path(result.checkpoint.path), dict(result.metrics or {}))


def train_stage(
    config: RunConfig,
    storage: Path,
    job: StageJob,
    starts: dict[str, list[int]] | None = None,
    log: MetricsLog | None = None,
) -> StageResult:
    """Train ``job`` up to its ``until_step`` on :func:`stage_stream` (``starts``: the step from
    which each store of a source is read; by default every store from step 0); ``log`` records
    every report (salad_ray.train.reporting)."""
    from ray.train import CheckpointConfig, FailureConfig
    from ray.train import RunConfig as TrainRunConfig
    from ray.train.torch import TorchTrainer

    from salad_ray.train.data import SlicedDataConfig, stream_dataset, stream_rows

    if not 0 < job.until_step <= job.total_steps:
        raise ValueError(f"{job.name}: until_step {job.until_step} must be in 1 .. {job.total_steps}")
    storage = Path(storage).resolve()
    g, accum = global_batch(config, job), config.train.grad_accum
    stream = stage_stream(config, job, starts)
    stored = stored_result(storage / job.name)
    start = state.Position.read(stored.checkpoint).step if stored is not None else 0
    if stored is not None and start >= job.until_step:  # done already: nothing to run
        return stored
    rows = stream_rows(stream[: job.until_step * g * accum], g, accum, start_step=start)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": config.model_dump(mode="json"), "job": asdict(job)},
        scaling_config=train_scaling_config(config),
        run_config=TrainRunConfig(
            name=job.name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.train.num_to_keep),
            callbacks=[log] if log is not None else None,
        ),
        datasets={"train": stream_dataset(rows)},
        dataset_config=SlicedDataConfig(),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{job.name}: training ended without a checkpoint ({result.error})")
    return StageResult(Path(result.checkpoint.path), dict(result.metrics or {}))
