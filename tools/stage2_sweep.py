"""Stage II's batch size and rate, measured from a finished run's stage-I student, without Ray.

Each setting trains the run's stage-I student on a stage-II stream of its own: the run's natural and
text stores and one arm's round stores (``--arm``: uniform, the default, or active; or any of the
run's spoken stores named with ``--synthetic``, e.g. both arms' and the probes'), mixed at
``stages.stage2_mix``, in one process with the trainer's own step function, optimizer, clipping and
WSD schedule over ``--steps``. Held-out F and M (fp32, the run's held-out store) are measured every
``--eval-every`` steps. The ratio
M / M(stage I) is what the `local` recipe's stage-II keys were chosen by (README, the recipe table).
With ``--accuracy``, the cloze accuracy of the run's benchmarks, spoken and read as text, is measured
too, at step 0 and at the end, as the run's evaluation scores it (its speech cache: nothing is
spoken again), with each change from start to end paired over the same items and its 95 % bootstrap
interval.

    python tools/stage2_sweep.py --run-dir runs/local --batch 16 --lr 2e-4 --steps 30 [--eval-every 15] [--accuracy]
        [--arm uniform|active | --synthetic STORE ...] [--set train.lr_adapter=1e-4 ...] [--save DIR]

``--save`` keeps the trained student (e.g. for tools/token_error.py).

Appends one JSON line per setting to ``--out`` (default <run-dir>/stage2_sweep.jsonl).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from salad_ray.config import load_config
from salad_ray.eval.stats import paired_accuracy_difference
from salad_ray.files import append_json_line
from salad_ray.pipeline.shards import ShardStore
from salad_ray.rundir import ARMS, EVAL_CACHE, HELDOUT, NATURAL, TEXT, UNIFORM, RunDir, stage1
from salad_ray.train.data import load_rows, micro_steps, stream_rows
from salad_ray.train.loop import StageJob, build_student, evaluate, make_optimizer, train_step, wrap
from salad_ray.train.mixture import mixture_stream, pool_refs
from salad_ray.train.schedule import WSD

CLOZE_MODES = {"speech": "spoken", "text": "text"}
"""The evaluation's input modes that ``--accuracy`` scores, and their result keys' prefixes."""


def cloze_scores(run: RunDir, config, student) -> dict:
    """``{mode: {"accuracy", "correct"}}``: the student's accuracy and 0/1 ``correct`` vectors on each
    of the run's benchmarks, spoken and as text, with the evaluation's prompts, speech cache and
    scoring (salad_ray.eval.suite)."""
    from salad_ray.eval.speech_cache import SpeechCache
    from salad_ray.eval.suite import build_prompts, score_modes, voice_prompts

    prompts = build_prompts(config, student.tokenizer, student.bos_id)
    prompts, _, _ = voice_prompts(config, prompts, SpeechCache(config, run.eval / EVAL_CACHE), lambda _: None)
    student.eval()
    scores = score_modes(student, prompts, list(CLOZE_MODES), config)
    student.train()
    return {mode: {kind: by_mode[mode] for kind, by_mode in scores.items()} for mode in CLOZE_MODES}


def cloze_changes(start: dict, end: dict) -> dict:
    """``spoken_accuracy`` and ``text_accuracy`` at the start and the end, and ``spoken_change`` and
    ``text_change``: end minus start, paired over the same items, with its bootstrap interval."""
    out = {}
    for mode, name in CLOZE_MODES.items():
        out[f"{name}_accuracy"] = {"stage1": start[mode]["accuracy"], "end": end[mode]["accuracy"]}
        out[f"{name}_change"] = paired_accuracy_difference(
            list(end[mode]["correct"].values()), list(start[mode]["correct"].values())
        ).to_dict()
    return out


def sweep(
    run: RunDir,
    synthetic: tuple[str, ...],
    batch: int,
    lr: float,
    steps: int,
    eval_every: int,
    accuracy: bool = False,
    overrides: tuple[str, ...] = (),
    save: Path | None = None,
) -> dict:
    """One setting from the run's stage-I student (module docstring); ``synthetic``: the run's stores
    that are the synthetic part of the stream (the result names them where ``stages.stage2_mix``
    reads that part); ``overrides``: more ``--set`` values on the run's config (e.g.
    ``train.lr_adapter=1e-4``)."""
    config = load_config(
        file=run.config, overrides=[*overrides, f"train.batch_size={batch}", f"train.lr_llm={lr}"]
    )
    stages = config.stages
    refs = {
        "natural": pool_refs(ShardStore(run.store(NATURAL)), "natural"),
        "active": [ref for name in synthetic for ref in pool_refs(ShardStore(run.store(name)), "active")],
        "text": pool_refs(ShardStore(run.store(TEXT)), "text"),
    }
    stream = mixture_stream(refs, stages.stage2_mix, steps * batch, config.train.seed)
    rows = load_rows(pd.DataFrame(stream_rows(stream, batch, 1))).to_dict("records")
    batches = [micro for _, _, micro, _ in micro_steps(iter(rows), 0)]
    heldout = list(ShardStore(run.store(HELDOUT)).samples())
    device = torch.device("cpu")
    job = StageJob(
        name="sweep",
        stores={},
        weights=stages.stage2_mix,
        total_steps=steps,
        until_step=steps,
        init=str(run.student(stage1(stages))),
    )
    student = build_student(config, job, None)
    model = wrap(student, "ddp", device)  # as the trainer runs it (one process)
    optimizer = make_optimizer(student, config, job.lr_adapter, job.lr_llm)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WSD(steps, config.train.warmup_steps, config.train.decay_fraction)
    )
    generator = torch.Generator().manual_seed(config.train.seed)
    curve = []

    def measure(step: int) -> None:
        student.eval()
        curve.append({"step": step, **evaluate(student, heldout, config.eval.batch_size, 0, 1, device)})
        student.train()
        print(json.dumps(curve[-1]), flush=True)

    measure(0)
    cloze = [cloze_scores(run, config, student)] if accuracy else []
    trained = 0.0
    for step in range(steps):
        t0 = time.perf_counter()
        train_step(model, student, [batches[step]], config, job, 1, device, generator)
        torch.nn.utils.clip_grad_norm_(
            [p for p in student.parameters() if p.requires_grad], config.train.clip_norm
        )
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        trained += time.perf_counter() - t0
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            measure(step + 1)
    if accuracy:
        cloze.append(cloze_scores(run, config, student))
    if save is not None:
        student.save(save)
    return {
        "batch": batch,
        "lr": lr,
        "overrides": list(overrides),
        "synthetic": list(synthetic) if stages.stage2_mix.get("active", 0) > 0 else [],
        "steps": steps,
        "seconds_per_step": trained / steps,
        "m_over_stage1": curve[-1]["heldout_m"] / curve[0]["heldout_m"],
        "curve": curve,
        **(cloze_changes(*cloze) if accuracy else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/local")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--eval-every", type=int, default=16)
    parser.add_argument(
        "--accuracy", action="store_true", help="also the cloze accuracy, spoken and as text, start and end"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    parser.add_argument("--out", default=None)
    parser.add_argument("--save", default=None, help="save the trained student to this directory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--arm",
        default=UNIFORM.name,
        choices=[a.name for a in ARMS],
        help="whose round stores to train on (default: uniform)",
    )
    source.add_argument(
        "--synthetic",
        nargs="+",
        metavar="STORE",
        help="the run's stores to train on instead of an arm's (e.g. active-1 uniform-1 probes-1)",
    )
    args = parser.parse_args()
    run = RunDir(Path(args.run_dir).resolve())
    arm = next(a for a in ARMS if a.name == args.arm)
    rounds = load_config(file=run.config, overrides=args.set).stages.stage2_rounds
    synthetic = tuple(args.synthetic or arm.stores(rounds))
    missing = [name for name in synthetic if not run.store(name).is_dir()]
    if missing:
        hint = " (uniform: selection.compare_uniform: true)" if not args.synthetic and arm is UNIFORM else ""
        parser.error(f"{run.root} lacks the store(s) {', '.join(missing)}{hint}")
    with tempfile.TemporaryDirectory() as rendezvous:
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}/pg", rank=0, world_size=1)
        result = sweep(
            run,
            synthetic,
            args.batch,
            args.lr,
            args.steps,
            args.eval_every,
            args.accuracy,
            tuple(args.set),
            Path(args.save) if args.save else None,
        )
        dist.destroy_process_group()
    append_json_line(args.out or run.root / "stage2_sweep.jsonl", result)
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))


if __name__ == "__main__":
    main()
