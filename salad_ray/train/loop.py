"""The per-worker distillation loop that Ray Train runs (DDP or FSDP, CPU or GPU).

One step:

1. read this rank's slice of ``grad_accum`` micro-steps from the stream (:mod:`salad_ray.train.data`);
2. count the text targets of every sample (and, for a CTC term or the warm-up, the spoken tokens)
   without running the model and all-reduce the sums: each term of the step's loss is (sum of its
   per-target losses over all ranks and micro-batches) / its count, so it does not depend on how
   samples are split across workers or micro-batches;
3. forward and backward each term of each micro-batch (DDP syncs gradients on the step's last
   backward only); DDP and FSDP average gradients over ranks, so each rank's loss is multiplied by
   the world size to make the average a sum;
4. clip, step AdamW and the WSD schedule; save the student to each of the job's ``exports`` at its
   step (a milestone on the way: the active arm's half-way student); report metrics every
   ``log_every`` steps; checkpoint every ``checkpoint_every`` steps and at ``until_step``; measure
   F and M on the held-out set every ``eval_every`` steps and at the end (in fp32,
   ``eval.batch_size`` samples per forward).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from salad_ray.batch import Sample, collate
from salad_ray.config import SOURCES, RunConfig
from salad_ray.files import on_disk
from salad_ray.interleave import mixed_layout
from salad_ray.losses import LossParts
from salad_ray.metrics import per_token
from salad_ray.model.student import SpeechLM
from salad_ray.objective import (
    alignment_loss,
    count_speech_tokens,
    count_targets,
    distillation_loss,
    samples_gap,
)
from salad_ray.pipeline.shards import ShardStore
from salad_ray.precision import autocast
from salad_ray.train import state
from salad_ray.train.flops import matmul_peak, step_flops
from salad_ray.train.schedule import WSD


@dataclass
class StageJob:
    """What one TorchTrainer run trains (JSON-able: it travels in train_loop_config)."""

    name: str
    stores: dict[str, list[str]]  # source name -> its shard store directories
    weights: dict[str, float]  # the mixture
    total_steps: int  # the schedule's horizon
    until_step: int  # stop after this step (<= total_steps); a later call with more resumes
    init: str | None = None  # a saved student to start from (stage II starts from stage I)
    objective: str = "distillation"  # or "alignment": the adapter-only warm-up (LLM frozen)
    lr_adapter: float | None = None  # the adapter's peak rate, when not train.lr_adapter
    lr_llm: float | None = None  # the LLM's peak rate, when not train.lr_llm
    batch_size: int | None = None  # samples per worker and micro-step, when not train.batch_size
    heldout: str | None = None  # a shard store of held-out samples for F and M
    exports: dict[str, int] = field(default_factory=dict)  # student directory -> the step it is saved at


def build_student(run: RunConfig, job: StageJob, checkpoint_dir: Path | None) -> SpeechLM:
    """The stage's student; in the alignment warm-up its LLM is frozen, and in distillation its adapter
    is when the adapter's rate is 0 (``requires_grad=False``: no gradients, no optimizer state)."""
    torch.manual_seed(run.train.seed)  # identical initial weights on every rank (FSDP shards them)
    if checkpoint_dir is not None:
        student = SpeechLM.load(checkpoint_dir / "student")
    elif job.init is not None:
        student = SpeechLM.load(job.init)
    else:
        student = SpeechLM.from_config(run.models)
    if job.objective == "alignment":
        student.llm.requires_grad_(False)
    elif adapter_rate(run, job) == 0:
        student.adapter.requires_grad_(False)
    return student


def adapter_rate(run: RunConfig, job: StageJob) -> float:
    """The adapter's peak learning rate in a stage: the job's own (the warm-up's), else train.lr_adapter."""
    return run.train.lr_adapter if job.lr_adapter is None else job.lr_adapter


def wrap(student: SpeechLM, strategy: str, device: torch.device) -> nn.Module:
    student.to(device)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in student._causal_lm().get_decoder().layers:
            fully_shard(layer)
        for block in student.adapter.blocks:
            fully_shard(block)
        return fully_shard(student)
    return nn.parallel.DistributedDataParallel(student)


def make_optimizer(
    student: SpeechLM, run: RunConfig, lr_adapter: float | None = None, lr_llm: float | None = None
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; adapter and LLM at their own rates (each group carries
    its part's ``name``; None: ``train.lr_adapter`` / ``train.lr_llm``); no weight decay on biases
    and norm gains."""
    t = run.train
    rates = {
        "adapter": t.lr_adapter if lr_adapter is None else lr_adapter,
        "llm": t.lr_llm if lr_llm is None else lr_llm,
    }
    groups = []
    for name, params in student.param_groups().items():
        lr = rates[name]
        decay, no_decay = [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
        groups.append({"name": name, "params": decay, "lr": lr, "weight_decay": t.weight_decay})
        groups.append({"name": name, "params": no_decay, "lr": lr, "weight_decay": 0.0})
    return torch.optim.AdamW([g for g in groups if g["params"]])


def all_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def mixed_lengths(student: SpeechLM, samples: list[Sample]) -> tuple[list[int], list[int]]:
    """LLM positions (len c) and adapter frames of each sample, for the FLOPs count."""
    llm, adapter = [], []
    for s in samples:
        frames = [student.frames(len(a)) for a in s.audio]
        llm.append(mixed_layout(len(s.ids), s.spans, frames).length)
        adapter += frames
    return llm, adapter


def evaluate(
    model: nn.Module, samples: list[Sample], batch_size: int, rank: int, world: int, device
) -> dict[str, float]:
    """F, M and the distillation KL D (over M's targets) per token over the held-out samples, split
    across ranks (every rank runs the same number of forwards)."""
    n_batches = math.ceil(math.ceil(len(samples) / world) / batch_size)
    gap = samples_gap(model, samples[rank::world], batch_size, device, batches=n_batches)
    totals = [float(t.sum()) for t in gap.tensors()]
    f_sum, f_count, m_sum, m_count, d_sum = all_sum(totals, device)
    return {
        "heldout_f": per_token([f_sum], [f_count]),
        "heldout_m": per_token([m_sum], [m_count]),
        "heldout_d": per_token([d_sum], [m_count]),
    }


def move_to_storage(checkpoint, name: str):
    """Ray Train's upload of a checkpoint (``ray.train.report``'s ``checkpoint_upload_fn``), by moving
    its files into the run's storage: on a local or mounted storage path each file is renamed where
    it is on the same filesystem (no bytes copied; a stage-II checkpoint is ~1.6 GB with AdamW's
    state) and copied where it is not; ranks that report files into one checkpoint merge them.
    Storage behind a URI (``s3://``), or a local path this worker's node does not see (a cluster
    without a shared filesystem), goes through Ray's own upload, which says what to fix."""
    import shutil

    import pyarrow.fs
    import ray.train

    storage = ray.train.get_context().get_storage()
    local = isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem)
    if not (local and Path(storage.experiment_fs_path).is_dir()):  # a URI, or a path this node lacks:
        return storage.persist_current_checkpoint(checkpoint, name)  # Ray's upload (and its errors)
    target = Path(storage.build_checkpoint_path_from_name(name))
    with on_disk(target, "a checkpoint"):
        for source in sorted(Path(checkpoint.path).rglob("*")):
            if source.is_file():
                destination = target / source.relative_to(checkpoint.path)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, destination)
    return ray.train.Checkpoint(path=str(target), filesystem=storage.storage_filesystem)


class Window:
    """Global sums over the steps of one metrics window, when it started, and how long rank 0 waited
    for the data stream in it."""

    KEYS = ("loss", "dist", "nll", "ctc", "flops", "positions", "samples")

    def __init__(self):
        self.start, self.steps, self.waited = time.perf_counter(), 0, 0.0
        self.sums = dict.fromkeys(self.KEYS, 0.0)

    def add(self, values: dict[str, float]) -> None:
        self.steps += 1
        for key in self.KEYS:
            self.sums[key] += values[key]

    def metrics(self, peak: float, world: int) -> dict[str, float]:
        """Mean losses, throughput and MFU of the window (reporting and checkpointing excluded)."""
        elapsed, steps, s = time.perf_counter() - self.start, max(self.steps, 1), self.sums
        return {
            "loss": s["loss"] / steps,
            "loss_dist": s["dist"] / steps,
            "loss_nll": s["nll"] / steps,
            "loss_ctc": s["ctc"] / steps,
            "tokens_per_s": s["positions"] / elapsed,
            "samples_per_s": s["samples"] / elapsed,
            "mfu": s["flops"] / (elapsed * peak * world),
            "peak_flops": peak,
            "seconds": elapsed,
            "data_wait_s": self.waited,  # blocked on the stream (reading, decoding audio): the trainer idle
        }


def train_step(
    model: nn.Module,
    student: SpeechLM,
    micro: list[list[Sample]],
    run: RunConfig,
    job: StageJob,
    world: int,
    device,
    generator: torch.Generator,
) -> dict[str, float]:
    """Forward and backward of one step's micro-batches (this rank's share); the optimiser is not stepped.

    The objective is the stage's: distillation (Eq. 4), plus ``train.ctc_weight`` times the CTC
    alignment of the step's speech spans, or the alignment warm-up alone; each term divided by its
    global target count (text targets of c, or spoken tokens). ``generator`` draws the alignment's
    negative classes. Returns this rank's contribution to the step's global sums.
    """
    t = run.train
    align = job.objective == "alignment"
    ctc_weight = 0.0 if align else t.ctc_weight
    flat = [s for samples in micro for s in samples]
    text_targets = 0 if align else sum(count_targets(s, student.frames) for s in flat)
    spoken = sum(count_speech_tokens(s) for s in flat) if align or ctc_weight else 0
    text_targets, spoken = all_sum([text_targets, spoken], device)

    def alignment(samples: list[Sample]) -> LossParts:
        parts, _ = alignment_loss(
            model,
            student,
            samples,
            negatives=run.stages.warmup.negatives,
            generator=generator,
            normalizer=max(spoken, 1.0),
            device=device,
        )
        return parts

    def distillation(samples: list[Sample]) -> LossParts:
        parts, _ = distillation_loss(
            model,
            collate(samples).to(device),
            alpha=run.distill.alpha,
            temperature=run.distill.temperature,
            normalizer=max(text_targets, 1.0),
        )
        return parts

    # Each term is one forward with its own backward (DDP expects one backward per forward). The CTC
    # term comes first: its backward leaves the LLM without gradients, which DDP accepts only
    # outside the synchronising backward, and the step's last backward, distillation's, uses them all.
    if align:
        terms = [(alignment, 1.0)]
    elif ctc_weight:
        terms = [(alignment, ctc_weight), (distillation, 1.0)]
    else:
        terms = [(distillation, 1.0)]
    sums = dict.fromkeys(("loss", "dist", "nll", "ctc"), 0.0)
    for i, samples in enumerate(micro):
        for j, (objective, weight) in enumerate(terms):
            # DDP all-reduces on the last backward of the step only; FSDP reduce-scatters every backward.
            sync = (i == len(micro) - 1 and j == len(terms) - 1) or t.strategy == "fsdp"
            with contextlib.nullcontext() if sync else model.no_sync(), autocast(t.precision, device):
                parts = objective(samples)
                (weight * parts.total * world).backward()
            total = float(parts.total.detach())
            sums["loss"] += weight * total
            if objective is alignment:
                sums["ctc"] += total
            else:
                sums["dist"] += float(parts.dist.detach())
                sums["nll"] += float(parts.nll.detach())
    llm_lengths, adapter_lengths = mixed_lengths(student, flat)
    if align:  # the LLM does not run in the warm-up: its positions are the adapter's frames
        llm_lengths = []
    return {
        **sums,
        "flops": step_flops(student, llm_lengths, adapter_lengths * len(terms)),  # the adapter runs per term
        "positions": float(sum(llm_lengths or adapter_lengths)),
        "samples": float(len(flat)),
    }


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    from salad_ray.train.data import ReadAhead, micro_steps

    run = RunConfig.model_validate(loop_config["run"])
    job = StageJob(**loop_config["job"])
    t = run.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    checkpoint = ray.train.get_checkpoint()
    with contextlib.ExitStack() as stack:
        checkpoint_dir = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
        # The stream is read from the restored step on while the model is built (its first batch
        # otherwise cost each stage-II call 5-13 s of waiting), and kept a step ahead after that.
        start = state.Position.read(checkpoint_dir).step if checkpoint_dir is not None else 0
        rows = ray.train.get_dataset_shard("train").iter_rows()
        stream = ReadAhead(micro_steps(rows, start), depth=2 * t.grad_accum)
        student = build_student(run, job, checkpoint_dir)
        model = wrap(student, t.strategy, device)
        optimizer = make_optimizer(student, run, job.lr_adapter, job.lr_llm)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, WSD(job.total_steps, t.warmup_steps, t.decay_fraction)
        )
        position = state.Position()
        if checkpoint_dir is not None:
            position = state.restore(
                checkpoint_dir, model=model, optimizer=optimizer, scheduler=scheduler, rank=rank
            )

    peak = matmul_peak(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    heldout = list(ShardStore(job.heldout).samples()) if job.heldout else []
    if position.step != start:
        raise RuntimeError(f"rank {rank} restored step {position.step}, but its stream starts at {start}")
    window = Window()
    model.train()
    for step in range(position.step, job.until_step):
        reading = time.perf_counter()
        micro = [next(stream) for _ in range(t.grad_accum)]
        window.waited += time.perf_counter() - reading
        if any(m[0] != step for m in micro):
            raise RuntimeError(f"rank {rank} read the data of step {[m[0] for m in micro]} at step {step}")
        generator = torch.Generator().manual_seed(t.seed * 1_000_003 + step * 1_009 + rank)
        sums = train_step(model, student, [m[2] for m in micro], run, job, world, device, generator)
        if t.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        sources = [src for m in micro for src in m[3]]
        total = all_sum(
            [sums[k] for k in Window.KEYS] + [float(sources.count(src)) for src in SOURCES], device
        )
        step_sums, per_source = dict(zip(Window.KEYS, total, strict=False)), total[len(Window.KEYS) :]
        window.add(step_sums)
        position.step = step + 1
        position.samples += int(step_sums["samples"])
        position.tokens += int(step_sums["positions"])
        for src, n in zip(SOURCES, per_source, strict=True):
            position.seen[src] = position.seen.get(src, 0) + int(n)
        for directory in [d for d, at in job.exports.items() if at == position.step]:
            exporting = time.perf_counter()
            state.export_student(Path(directory), model=model, student=student, rank=rank)
            window.start += time.perf_counter() - exporting  # not timed, as reporting is not

        last = position.step == job.until_step
        log_now = position.step % t.log_every == 0 or last
        save_now = position.step % t.checkpoint_every == 0 or last
        eval_now = bool(heldout) and ((t.eval_every and position.step % t.eval_every == 0) or last)
        if not (log_now or save_now or eval_now):
            continue
        metrics: dict = {
            "step": position.step,
            "samples": position.samples,
            "tokens": position.tokens,
            **{
                f"lr_{g['name']}": lr
                for g, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True)
            },
            **{f"seen_{k}": v for k, v in position.seen.items()},
        }
        if log_now:
            metrics.update(window.metrics(peak, world))
        if eval_now:
            metrics.update(evaluate(model, heldout, run.eval.batch_size, rank, world, device))
        if save_now:
            with tempfile.TemporaryDirectory() as tmp:
                state.save(
                    Path(tmp),
                    model=model,
                    student=student,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    position=position,
                    rank=rank,
                )
                ray.train.report(
                    metrics,
                    checkpoint=ray.train.Checkpoint.from_directory(tmp),
                    checkpoint_upload_fn=move_to_storage,
                )
        else:
            ray.train.report(metrics)
        if log_now:  # the next window starts after this report: reporting and saving are not timed
            window = Window()
