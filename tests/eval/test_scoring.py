"""Option scoring with real models: the maths, sure answers, SmolLM2 on the offline benchmark, the cascade."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salad_ray.config import BenchmarkSpec
from salad_ray.eval.items import Item, load_items
from salad_ray.eval.likelihood import (
    build_prompt,
    continuation_scores,
    option_samples,
    predict,
)
from salad_ray.eval.suite import accuracy, speak_prompts, transcribe_prompts
from salad_ray.model.student import SpeechLM

CHANCE = 0.25  # four options
# SmolLM2-135M measured 0.63 zero-shot on these 60 items; the test asks for chance + 20 points.
ABOVE_CHANCE_MARGIN = 0.20
# Whisper-tiny (beam 5) hears clean espeak-ng speech at ~6 % CER; on a cloze, where the last words
# of the context decide, that cost 12-17 points (0.70-0.75 against 0.87 on text, 60 items). The
# test allows 20 points and asks the cascade to stay far above chance too.
CASCADE_TOLERANCE = 0.20


@pytest.fixture(scope="module")
def smoke_student(smoke_config):
    return SpeechLM.from_config(smoke_config.models).eval()


def test_text_score_is_the_mean_option_log_probability(smoke_student):
    item = Item("x", "t", "the cat sat on the", ("mat today", "moon"), 0)
    prompt = build_prompt(item, [], span_words=30)
    samples = option_samples(smoke_student, prompt, "text")
    scores = continuation_scores(smoke_student, [s for s, _ in samples], [start for _, start in samples])
    llm = smoke_student._causal_lm()
    for (sample, start), score in zip(samples, scores, strict=True):
        ids = torch.tensor([sample.ids])
        with torch.no_grad():
            logp = torch.log_softmax(llm(input_ids=ids).logits[0].float(), -1)
        option = range(start, len(sample.ids))  # token i is predicted by row i - 1
        expected = np.mean([float(logp[i - 1, sample.ids[i]]) for i in option])
        assert score == pytest.approx(expected, abs=1e-4)


def test_speech_score_reads_only_the_option_rows(smoke_student, espeak, smoke_config):
    item = Item("x", "t", "the cat sat on the", ("mat today", "moon"), 0)
    prompt = build_prompt(item, [], span_words=30)
    speak_prompts(smoke_config, [prompt])
    samples = option_samples(smoke_student, prompt, "speech")
    assert all(s.spans[0].speech and not s.spans[-1].speech for s, _ in samples)
    scores = continuation_scores(smoke_student, [s for s, _ in samples], [x for _, x in samples])
    for (sample, start), score in zip(samples, scores, strict=True):
        from salad_ray.batch import collate

        with torch.no_grad():
            logits, rows = smoke_student(collate([sample]), "mixed")  # every text target of c
        logp = torch.log_softmax(logits.float(), -1)
        picked = [float(logp[n, sample.ids[w]]) for n, w in enumerate(rows.w.tolist()) if w >= start]
        assert len(picked) == len(sample.ids) - start
        assert score == pytest.approx(np.mean(picked), abs=1e-4)


@pytest.fixture(scope="module")
def smollm(local_config):
    return SpeechLM.from_config(local_config.models).eval()


def test_sure_answers_are_picked(smollm):
    items = [
        Item("count", "sure", "1, 2, 3, 4, 5, 6, 7, 8,", ("9, 10, 11", "banana, umbrella, yes"), 0),
        Item("days", "sure", "Monday, Tuesday, Wednesday,", ("purple, seven, glass", "Thursday, Friday"), 1),
        Item("abc", "sure", "A B C D E F G H", ("Q Z X", "I J K L", "the of the")[::-1], 1),
        Item("capital", "sure", "The capital city of France is", ("Paris.", "a banana.", "blue."), 0),
    ]
    predictions = predict(smollm, [build_prompt(i, [], 30) for i in items], "text", batch_size=4)
    assert [items[n].options[p] for n, p in enumerate(predictions)] == [i.options[i.answer] for i in items]


@pytest.fixture(scope="module")
def cloze_prompts(local_config):
    """The local preset's offline benchmark, zero-shot, spoken by espeak-ng and transcribed."""
    spec = local_config.eval.benchmarks[0]
    items = load_items(BenchmarkSpec(**{**spec.model_dump(), "limit": 60}))
    prompts = [build_prompt(item, [], 30) for item in items]
    speak_prompts(local_config, prompts)
    transcribe_prompts(local_config, prompts)
    return prompts


@pytest.mark.slow
def test_smollm2_reads_the_offline_benchmark_well_above_chance(smollm, cloze_prompts):
    items = [p.item for p in cloze_prompts]
    assert {len(i.options) for i in items} == {4}
    text = accuracy(predict(smollm, cloze_prompts, "text", 8), items)
    assert text >= CHANCE + ABOVE_CHANCE_MARGIN


@pytest.mark.slow
def test_the_cascade_on_clean_speech_is_close_to_text(smollm, cloze_prompts):
    items = [p.item for p in cloze_prompts]
    text = accuracy(predict(smollm, cloze_prompts, "text", 8), items)
    cascade = accuracy(predict(smollm, cloze_prompts, "cascade", 8), items)
    assert abs(cascade - text) <= CASCADE_TOLERANCE and cascade >= CHANCE + 0.3
    heard = [t for p in cloze_prompts for t in p.transcripts]
    assert len(heard) == sum(len(p.spoken_texts()) for p in cloze_prompts) and all(heard)
