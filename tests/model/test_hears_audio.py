"""The student hears the audio: trained briefly, it predicts a spoken word's continuation better from
that word's speech than from another word's (the shuffled-audio control).

Each sample is ``[BOS] [speech: WORD] WORD``: the one text target, the word again, follows the speech
and can only be known from it. Every waveform is zero-padded to one length, so all samples have the
same number of frames and a student that ignores what the audio says (a constant adapter output)
scores exactly the same on real and on shuffled audio (with CTC compression too: constant frames
compress alike). Audio is shuffled within each voice, so every sample hears another word. Both ways
of turning frames into LLM positions are tested: every frame, and CTC compression.

The smoke preset's tiny random LLM and adapter, with the local preset's encoder (whisper-tiny in
CTranslate2): the smoke preset's random Whisper barely encodes what was said (its features for
different words differ by ~1%), so on it a failure would blame the encoder, not the student.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salad_ray.batch import Batch, Sample, collate
from salad_ray.config import AdapterPositions, RunConfig
from salad_ray.eval.controls import shuffled_audio
from salad_ray.interleave import WordSpan, tokenize_spans
from salad_ray.losses import nll
from salad_ray.model.student import SpeechLM
from salad_ray.objective import distillation_loss
from salad_ray.train.loop import make_optimizer

WORDS = ["apple", "river", "yellow", "seven"]  # one token each, with a leading space, in SmolLM2
VOICES = ["en-us", "en-gb"]
STEPS = 40
ALPHA = 0.5  # both parts of the objective: the NLL on the word, the KL to a random teacher given it
MARGIN = 2.0  # nats (9.4-11.2 observed over seeds); a student that ignores the audio has exactly 0


def word_samples(student: SpeechLM, espeak) -> list[Sample]:
    spans = [WordSpan(0, 1, True), WordSpan(1, 2, False)]
    samples = []
    for voice in VOICES:
        for word in WORDS:
            ids, token_spans, _ = tokenize_spans(student.tokenizer, [word, word], spans, student.bos_id)
            assert [s.end - s.start for s in token_spans] == [1, 1]
            (audio,) = espeak.synthesize([word], voice)
            samples.append(Sample(f"{word}-{voice}", ids, token_spans, [audio]))
    longest = max(len(s.audio[0]) for s in samples)
    for s in samples:
        s.audio = [np.pad(s.audio[0], (0, longest - len(s.audio[0])))]
    return samples


@torch.no_grad()
def add_teacher(student: SpeechLM, samples: list[Sample], k: int) -> None:
    """Teacher top-k from the untrained student's LLM on the pure text w: the product's teacher."""
    batch = collate(samples)
    logprobs = student.logits(student.text_hidden(batch)).log_softmax(-1)  # row i - 1 predicts w[i]
    for b, s in enumerate(samples):
        top = logprobs[b, : len(s.ids) - 1].topk(k)
        s.teacher_ids = np.concatenate([np.full((1, k), -1), top.indices.numpy()])
        s.teacher_logprobs = np.concatenate([np.zeros((1, k)), top.values.numpy()]).astype(np.float32)


@torch.no_grad()
def word_nll(student: SpeechLM, batch: Batch) -> tuple[float, float]:
    """Mean NLL of the spoken word's continuation, and the accuracy of its argmax."""
    logits, rows = student(batch, "mixed")
    target = batch.w_ids[rows.sample, rows.w]
    return nll(logits, target).mean().item(), (logits.argmax(-1) == target).float().mean().item()


@pytest.mark.slow  # loads whisper-tiny; ~15 s on 2 cores
@pytest.mark.parametrize("positions", list(AdapterPositions))
def test_student_uses_the_audio_it_hears(
    smoke_config: RunConfig, local_config: RunConfig, espeak, positions: AdapterPositions
):
    adapter = smoke_config.models.adapter.model_copy(update={"positions": positions})
    models = smoke_config.models.model_copy(
        update={"encoder": local_config.models.encoder, "adapter": adapter}
    )
    torch.manual_seed(0)
    student = SpeechLM.from_config(models)
    samples = word_samples(student, espeak)
    add_teacher(student, samples, smoke_config.distill.top_k)
    assert len({student.frames(len(s.audio[0])) for s in samples}) == 1
    by_voice = [samples[v * len(WORDS) : (v + 1) * len(WORDS)] for v in range(len(VOICES))]
    real = collate(samples)
    shuffled = collate([s for group in by_voice for s in shuffled_audio(group, seed=0)])

    train = smoke_config.train
    optimizer = make_optimizer(student, smoke_config)
    student.train()
    for _ in range(STEPS):
        parts, n = distillation_loss(student, real, alpha=ALPHA, temperature=1.0, normalizer=len(samples))
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), train.clip_norm)
        optimizer.step()
    assert n == len(samples)

    student.eval()
    real_nll, real_acc = word_nll(student, real)
    shuffled_nll, shuffled_acc = word_nll(student, shuffled)
    print(
        f"word NLL: real audio {real_nll:.3f} (acc {real_acc:.2f}), shuffled {shuffled_nll:.3f} ({shuffled_acc:.2f})"
    )
    assert shuffled_nll - real_nll > MARGIN
    assert real_acc >= 0.75 and real_acc - shuffled_acc >= 0.5
