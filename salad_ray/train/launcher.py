"""The TorchTrainer of one training stage: data stream, workers, checkpoints, failures.

``train_stage`` runs a stage up to ``job.until_step`` of its ``job.total_steps``-step schedule.
Calling it again with the same name and a larger ``until_step`` continues the same run from its
latest checkpoint (Ray Train restores the checkpoint manager from storage): the schedule, the
data stream and the optimizer carry on exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from salad_ray.config import RunConfig
from salad_ray.pipeline.shards import ShardStore
from salad_ray.resources import max_train_workers, train_scaling_config
from salad_ray.train import state
from salad_ray.train.loop import StageJob, train_loop_per_worker
from salad_ray.train.mixture import mixture_stream, pool_refs


@dataclass(frozen=True)
class StageResult:
    checkpoint: Path  # the latest checkpoint; its student/ is the trained student
    metrics: dict

    @property
    def student(self) -> Path:
        return self.checkpoint / "student"


def global_batch(config: RunConfig) -> int:
    """Samples per micro-step over all workers: fixed by the largest worker count of the range."""
    return config.train.batch_size * max_train_workers(config)


def train_stage(config: RunConfig, storage: Path, job: StageJob) -> StageResult:
    import ray
    from ray.train import CheckpointConfig, FailureConfig
    from ray.train import RunConfig as TrainRunConfig
    from ray.train.torch import TorchTrainer

    from salad_ray.train.data import SlicedDataConfig, stream_rows

    if not 0 < job.until_step <= job.total_steps:
        raise ValueError(f"{job.name}: until_step {job.until_step} must be in 1 .. {job.total_steps}")
    storage = Path(storage).resolve()
    pools = {
        src: [ref for root in roots for ref in pool_refs(ShardStore(root), src)]
        for src, roots in job.stores.items()
    }
    g, accum = global_batch(config), config.train.grad_accum
    stream = mixture_stream(pools, job.weights, job.total_steps * g * accum, config.train.seed)
    checkpoint, start = state.latest(storage / job.name)
    if checkpoint is not None and start >= job.until_step:  # done already: nothing to run
        return StageResult(checkpoint, {"step": start})
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
        ),
        datasets={"train": ray.data.from_items(rows)},
        dataset_config=SlicedDataConfig(),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{job.name}: training ended without a checkpoint ({result.error})")
    return StageResult(Path(result.checkpoint.path), dict(result.metrics or {}))
