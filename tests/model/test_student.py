"""The student on real models and real speech: forward, backward, layout, save and load."""

import pytest
import torch

from salad_ray.batch import collate
from salad_ray.config import InterleaveConfig, load_config
from salad_ray.model.student import SpeechLM
from salad_ray.objective import batch_gap, distillation_loss
from salad_ray.spoken import plan_text, speak
from salad_ray.teacher.backends import TransformersBackend

TEXTS = [
    "The committee met on a grey morning to argue about the budget for the new library and its roof.",
    "Birds that migrate across the desert carry extra fat, and they rest at oases along the way south.",
]


def spoken_batch(student, espeak, teacher, k=8, mode="interleaved"):
    config = InterleaveConfig(mode=mode, text_words=(4, 6), speech_words=(3, 5))
    samples = []
    for n, text in enumerate(TEXTS):
        plan = plan_text(f"t{n}", text, student.tokenizer, student.bos_id, config)
        samples.append(speak(plan, espeak, "en-us", {}))
    for sample, answer in zip(samples, teacher.topk([s.ids for s in samples], k), strict=True):
        sample.teacher_ids, sample.teacher_logprobs = answer.ids, answer.logprobs
    return samples


@pytest.fixture(scope="module")
def real_student():
    torch.manual_seed(0)
    return SpeechLM.from_config(load_config("local").models)


@pytest.fixture(scope="module")
def real_teacher(smollm_path):
    return TransformersBackend(smollm_path)


@pytest.mark.slow
def test_real_student_forward_backward_on_espeak_speech(real_student, real_teacher, espeak):
    student = real_student.train()
    samples = spoken_batch(student, espeak, real_teacher)
    batch = collate(samples)
    parts, n_targets = distillation_loss(student, batch, alpha=1.0, temperature=1.0, normalizer=100)
    assert n_targets > 0 and torch.isfinite(parts.total) and parts.total.item() > 0
    parts.total.backward()
    groups = student.param_groups()
    assert all(p.grad is not None for p in groups["adapter"])
    adapter_grad = sum(p.grad.abs().sum().item() for p in groups["adapter"])
    llm_grad = sum(p.grad.abs().sum().item() for p in groups["llm"] if p.grad is not None)
    assert adapter_grad > 0 and llm_grad > 0
    student.zero_grad(set_to_none=True)
    # the frames the student reports are the frames it makes; CTC compression keeps at most as many
    for audio in samples[0].audio:
        assert student.adapter_frames([audio])[0].shape[0] == student.frames(len(audio))
        assert 1 <= student.speech_embeddings([audio])[0].shape[0] <= student.frames(len(audio))


@pytest.mark.slow
def test_mixed_context_agrees_with_text_before_the_first_speech_span(real_student, real_teacher, espeak):
    student = real_student.eval()
    batch = collate(spoken_batch(student, espeak, real_teacher))
    with torch.no_grad():
        text = student.text_hidden(batch)
        mixed, mask, layouts = student.mixed_hidden(batch)
    for b, layout in enumerate(layouts):
        first_speech = layout.speech_slices[0][0]
        assert first_speech > 0 or batch.spans[b][0].speech
        # up to the first speech frame, c and w are the same tokens, so causal outputs agree
        torch.testing.assert_close(mixed[b, :first_speech], text[b, :first_speech], atol=1e-4, rtol=1e-4)
        assert mask[b].sum() == layout.length


@pytest.mark.slow
def test_gap_is_zero_on_text_only_samples_and_untrained_student_matches_teacher(
    real_student, real_teacher, espeak
):
    student = real_student.eval()
    samples = spoken_batch(student, espeak, real_teacher)
    gap = batch_gap(student, collate(samples))
    assert (gap.m_sums > 0).all()  # speech moves the untrained student away from its text self
    assert gap.f_sums.abs().max() < 1e-3  # the untrained student's LLM is the teacher
    text_gap = batch_gap(student, collate([s.text_only() for s in samples]))
    assert text_gap.m_sums.abs().max() < 1e-4  # c == w, so M is exactly zero


def test_save_and_load_round_trip(tmp_path, smoke_config, espeak):
    for lora in (False, True):
        models = smoke_config.models.model_copy(deep=True)
        models.lora.enabled = lora
        models.lora.r = 4
        torch.manual_seed(1)
        student = SpeechLM.from_config(models).eval()
        with torch.no_grad():  # make the saved weights differ from a fresh build
            for p in student.parameters():
                if p.requires_grad:
                    p.add_(0.01 * torch.randn_like(p))
        student.save(tmp_path / f"s{lora}")
        loaded = SpeechLM.load(tmp_path / f"s{lora}").eval()
        plan = plan_text(
            "x",
            TEXTS[0],
            student.tokenizer,
            student.bos_id,
            InterleaveConfig(text_words=(4, 6), speech_words=(3, 5)),
        )
        batch = collate([speak(plan, espeak, "en-us", {})])
        with torch.no_grad():
            a, _, _ = student.mixed_hidden(batch)
            b, _, _ = loaded.mixed_hidden(batch)
        torch.testing.assert_close(a, b)
        trainable_llm = [n for n, p in loaded.llm.named_parameters() if p.requires_grad]
        assert trainable_llm and (
            all("lora_" in n for n in trainable_llm) if lora else len(trainable_llm) > 10
        )
    with pytest.raises(FileNotFoundError, match="is not a saved student"):
        SpeechLM.load(tmp_path)
