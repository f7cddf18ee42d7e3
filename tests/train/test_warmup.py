"""The alignment warm-up: CTC from adapter frames to the spoken tokens, with the LLM frozen."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from salad_ray.config import RunConfig
from salad_ray.losses import ctc_alignment
from salad_ray.model.student import SpeechLM
from salad_ray.objective import alignment_loss, count_speech_tokens
from salad_ray.train.loop import StageJob, build_student, make_optimizer


def test_ctc_prefers_frames_that_spell_the_tokens():
    """Frames that point at tokens 1, 2 in order (blank between) beat frames that spell 2, 1."""
    right = torch.full((1, 4, 3), -10.0)
    for t, c in enumerate([1, 0, 2, 0]):
        right[0, t, c] = 10.0
    wrong = right[:, :, [0, 2, 1]]
    lens, target = torch.tensor([4]), [torch.tensor([1, 2])]
    assert ctc_alignment(right, lens, target, normalizer=2) < 0.01
    assert ctc_alignment(wrong, lens, target, normalizer=2) > 5


@pytest.mark.slow  # loads whisper-tiny; ~15 s on 2 cores
def test_warmup_trains_the_adapter_alone(smoke_config: RunConfig, local_config: RunConfig, espeak):
    """The warm-up's student has a frozen LLM (no gradients, no optimizer state) and its alignment
    loss falls on spoken words within a few steps."""
    from salad_ray.batch import Sample
    from salad_ray.interleave import WordSpan, tokenize_spans

    models = smoke_config.models.model_copy(update={"encoder": local_config.models.encoder})
    run = smoke_config.model_copy(update={"models": models})
    job = StageJob(
        name="warmup", stores={}, weights={"natural": 1.0}, total_steps=1, until_step=1, objective="alignment"
    )
    student: SpeechLM = build_student(run, job, None)
    assert not any(p.requires_grad for p in student.llm.parameters())
    optimizer = make_optimizer(student, run, lr_adapter=3e-3)
    adapter_ids = {id(p) for p in student.adapter.parameters()}
    assert all(id(p) in adapter_ids for g in optimizer.param_groups for p in g["params"])

    words = ["apple", "river", "yellow", "seven", "window", "orange"]
    samples = []
    for k, voice in enumerate(["en-us", "en-gb"]):
        text = [*words[k::2], "and", "then"]
        spans = [WordSpan(0, 3, True), WordSpan(3, 5, False)]
        ids, token_spans, _ = tokenize_spans(student.tokenizer, text, spans, student.bos_id)
        samples.append(Sample(f"s{k}", ids, token_spans, espeak.synthesize([" ".join(text[:3])], voice)))
    n = sum(count_speech_tokens(s) for s in samples)
    losses = []
    for step in range(30):
        parts, targets = alignment_loss(
            student,
            student,
            samples,
            negatives=64,
            generator=torch.Generator().manual_seed(step),
            normalizer=n,
            device=torch.device("cpu"),
        )
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        losses.append(float(parts.total))
    assert targets == n
    assert all(p.grad is None for p in student.llm.parameters())
    assert losses[-1] < 0.5 * losses[0], losses


def test_a_share_without_speech_still_runs_the_adapter(smoke_config: RunConfig):
    """A worker whose share of a warm-up step holds no speech gets a zero loss that still reaches every
    adapter parameter, so DDP's gradient all-reduce on the other workers does not wait for it."""
    from salad_ray.batch import Sample
    from salad_ray.interleave import TokenSpan

    torch.manual_seed(0)
    student = SpeechLM.from_config(smoke_config.models)
    ids = student.tokenizer.encode("just some text", add_special_tokens=False)
    text_only = [Sample("t", ids, [TokenSpan(0, len(ids), False)], [])]
    parts, targets = alignment_loss(
        student,
        student,
        text_only,
        negatives=8,
        generator=torch.Generator().manual_seed(0),
        normalizer=1,
        device=torch.device("cpu"),
    )
    assert targets == 0 and parts.total.item() == 0.0
    parts.total.backward()
    assert all(p.grad is not None for p in student.adapter.parameters())


def test_a_zero_adapter_rate_freezes_the_adapter_after_the_warmup(smoke_config: RunConfig):
    """``train.lr_adapter: 0`` keeps the warm-up's adapter as it is in distillation: no gradients, no
    optimizer state, while the LLM trains; the warm-up itself still trains the adapter at its own rate."""
    run = smoke_config.model_copy(update={"train": smoke_config.train.model_copy(update={"lr_adapter": 0.0})})
    distill = StageJob(name="stage1", stores={}, weights={"natural": 1.0}, total_steps=1, until_step=1)
    student = build_student(run, distill, None)
    assert not any(p.requires_grad for p in student.adapter.parameters())
    optimizer = make_optimizer(student, run)
    assert {g["name"] for g in optimizer.param_groups} == {"llm"}
    warmup = dataclasses.replace(distill, name="warmup", objective="alignment", lr_adapter=2e-3)
    student = build_student(run, warmup, None)
    assert all(p.requires_grad for p in student.adapter.parameters())
    assert {g["name"] for g in make_optimizer(student, run, warmup.lr_adapter).param_groups} == {"adapter"}


def test_stage_two_trains_the_llm_at_its_own_rate(smoke_config: RunConfig, tmp_path):
    """``stages.stage2_lr_llm`` reaches stage II's job and its optimizer; stage I keeps ``train.lr_llm``."""
    from salad_ray.rundir import ACTIVE, RunDir
    from salad_ray.train.jobs import stage_job

    stages = smoke_config.stages.model_copy(update={"stage2_lr_llm": 4e-4})
    run = smoke_config.model_copy(update={"stages": stages})
    stage1, _ = stage_job(run, RunDir(tmp_path), 1)
    stage2, _ = stage_job(run, RunDir(tmp_path), 1, ACTIVE)
    assert (stage1.lr_llm, stage2.lr_llm) == (None, 4e-4)
    student = build_student(run, dataclasses.replace(stage1, init=None), None)
    rates = {
        job.name: {
            g["name"]: g["lr"] for g in make_optimizer(student, run, job.lr_adapter, job.lr_llm).param_groups
        }
        for job in (stage1, stage2)
    }
    assert rates["stage1"]["llm"] == run.train.lr_llm
    assert rates["stage2-active"]["llm"] == 4e-4


def test_stage_two_reads_its_own_batch_size(smoke_config: RunConfig, tmp_path):
    """``stages.stage2_batch_size`` sizes stage II's steps; stage I keeps ``train.batch_size``."""
    from salad_ray.rundir import ACTIVE, RunDir
    from salad_ray.train.jobs import stage_job
    from salad_ray.train.launcher import global_batch

    stages = smoke_config.stages.model_copy(update={"stage2_batch_size": 12})
    run = smoke_config.model_copy(update={"stages": stages})
    stage1, _ = stage_job(run, RunDir(tmp_path), 1)
    stage2, _ = stage_job(run, RunDir(tmp_path), 1, ACTIVE)
    assert (stage1.batch_size, stage2.batch_size) == (None, 12)
    workers = global_batch(run) // run.train.batch_size
    assert global_batch(run, stage1) == run.train.batch_size * workers
    assert global_batch(run, stage2) == 12 * workers


def test_a_ctc_term_in_distillation_trains_the_adapter_by_both_objectives(
    smoke_config: RunConfig, espeak, tmp_path
):
    """``train.ctc_weight`` adds the alignment CTC of the step's speech spans to distillation. Under
    DDP (its own backward per term, the synchronising one last: a second step on the same model would
    fail otherwise) a step reports both parts; the LLM's gradient is distillation's alone and the
    adapter's is distillation's plus lambda times the CTC loss's own gradient."""
    import torch.distributed as dist

    from salad_ray.precision import autocast
    from salad_ray.train.loop import train_step, wrap
    from tests.model.test_hears_audio import add_teacher, word_samples

    cpu = torch.device("cpu")

    def student_and_run(ctc_weight: float):
        train = smoke_config.train.model_copy(update={"lr_adapter": 1e-3, "ctc_weight": ctc_weight})
        run = smoke_config.model_copy(update={"train": train})
        job = StageJob(name="stage1", stores={}, weights={"natural": 1.0}, total_steps=1, until_step=1)
        torch.manual_seed(0)
        student = build_student(run, job, None)
        samples = word_samples(student, espeak)
        add_teacher(student, samples, run.distill.top_k)
        return student, samples, run, job

    def grads(student) -> dict[str, torch.Tensor]:
        return {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}

    def step(ctc_weight: float, steps: int = 1):
        student, samples, run, job = student_and_run(ctc_weight)
        model = wrap(student, "ddp", cpu)
        for _ in range(steps):
            student.zero_grad(set_to_none=True)
            sums = train_step(model, student, [samples], run, job, 1, cpu, torch.Generator().manual_seed(0))
        return sums, grads(student)

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        plain, plain_grads = step(0.0)
        both, both_grads = step(2.0, steps=2)
    finally:
        dist.destroy_process_group()
    student, samples, run, _ = student_and_run(2.0)  # the CTC term alone, as the step computes it
    with autocast(run.train.precision, cpu):
        ctc, _ = alignment_loss(
            student,
            student,
            samples,
            negatives=run.stages.warmup.negatives,
            generator=torch.Generator().manual_seed(0),
            normalizer=sum(count_speech_tokens(s) for s in samples),
            device=cpu,
        )
        ctc.total.backward()
    ctc_grads = grads(student)

    assert plain["ctc"] == 0.0 and both["ctc"] > 0
    assert both["ctc"] == pytest.approx(float(ctc.total), rel=1e-5)
    assert both["dist"] == pytest.approx(plain["dist"], rel=1e-5)
    assert both["loss"] == pytest.approx(both["dist"] + 2.0 * both["ctc"], rel=1e-5)
    llm = [n for n in plain_grads if n.startswith("llm.")]
    adapter = [n for n in plain_grads if n.startswith("adapter.")]
    assert llm and adapter and not any(n in ctc_grads for n in llm)  # CTC does not reach the LLM
    for n in llm:
        torch.testing.assert_close(both_grads[n], plain_grads[n], atol=1e-6, rtol=1e-5)
    for n in adapter:
        torch.testing.assert_close(both_grads[n], plain_grads[n] + 2.0 * ctc_grads[n], atol=1e-5, rtol=1e-4)


def test_a_ctc_term_needs_a_trainable_adapter(smoke_config: RunConfig):
    from salad_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="lr_adapter 0 freezes"):
        load_config("smoke", overrides=["train.lr_adapter=0", "train.ctc_weight=1"])
