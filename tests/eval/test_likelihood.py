"""Option scoring with real models: the maths, sure answers, SmolLM2 on the offline benchmark, the cascade."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salad_ray.batch import Sample, collate
from salad_ray.config import BenchmarkSpec
from salad_ray.eval.items import Item, load_items
from salad_ray.eval.likelihood import build_prompt, encode_option, option_scores, predict, prompt_sample
from salad_ray.eval.suite import accuracy, speak_prompts, transcribe_prompts
from salad_ray.interleave import TokenSpan
from salad_ray.model.student import SpeechLM

CHANCE = 0.25  # four options
# SmolLM2-135M measured 0.63 zero-shot on these 60 items; the test asks for chance + 20 points.
ABOVE_CHANCE_MARGIN = 0.20
# Whisper-tiny (beam 5) hears clean espeak-ng speech at 5-6 % CER; on a cloze, where the last words
# of the context decide, that cost 12-20 points (0.67-0.75 against 0.87 on text, 60 items, measured
# over voices and speaking rates). The test allows 25 points and asks the cascade to stay far above
# chance (a broken cascade, empty or misaligned transcripts, lands near 0.25-0.4).
CASCADE_TOLERANCE = 0.25


@pytest.fixture(scope="module")
def smoke_student(smoke_config):
    return SpeechLM.from_config(smoke_config.models).eval()


ITEM = Item("x", "t", "the cat sat on the", ("mat today", "moon", "big red mat"), 0)


def scores_of(student, prompt, mode):
    options = [encode_option(student.tokenizer, o) for o in prompt.item.options]
    return (
        prompt_sample(student, prompt, mode),
        options,
        option_scores(student, [prompt_sample(student, prompt, mode)], [options])[0],
    )


def plain_score(student, prompt_ids: list[int], option: list[int]) -> float:
    """The definition: one causal forward of prompt + option, its tokens' mean log-probability."""
    ids = prompt_ids + option
    with torch.no_grad():
        logp = torch.log_softmax(student._causal_lm()(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return float(np.mean([float(logp[i - 1, ids[i]]) for i in range(len(prompt_ids), len(ids))]))


def test_text_score_is_the_mean_option_log_probability(smoke_student):
    """The packed path (prompt and options in one row) against one plain forward per option."""
    sample, options, scores = scores_of(smoke_student, build_prompt(ITEM, [], span_words=30), "text")
    for option, score in zip(options, scores, strict=True):
        assert score == pytest.approx(plain_score(smoke_student, sample.ids, option), abs=1e-4)


def test_a_batch_scores_each_prompt_as_alone(smoke_student):
    """Prompts of different lengths and option counts in one forward: padding, packing and the
    restarted positions change no score."""
    items = [
        ITEM,
        Item("y", "t", "once upon a time there was a very small dog who", ("barked", "sang a song"), 1),
        Item("z", "t", "one two", ("three", "four five six", "seven", "eight nine"), 0),
    ]
    prompts = [prompt_sample(smoke_student, build_prompt(i, [], 30), "text") for i in items]
    options = [[encode_option(smoke_student.tokenizer, o) for o in i.options] for i in items]
    batched = option_scores(smoke_student, prompts, options)
    assert [len(s) for s in batched] == [3, 2, 4]
    for prompt, opts, scores in zip(prompts, options, batched, strict=True):
        expected = [plain_score(smoke_student, prompt.ids, o) for o in opts]
        assert scores == pytest.approx(expected, abs=1e-4)


def test_speech_score_matches_the_full_mixed_forward(smoke_student, smoke_config):
    prompt = build_prompt(ITEM, [], span_words=3)  # the context spoken as two spans
    speak_prompts(smoke_config, [prompt])
    sample, options, scores = scores_of(smoke_student, prompt, "speech")
    assert [s.speech for s in sample.spans] == [True, True] and len(sample.audio) == 2
    for option, score in zip(options, scores, strict=True):
        full = Sample(
            "full",
            sample.ids + option,
            [*sample.spans, TokenSpan(len(sample.ids), len(sample.ids) + len(option), False)],
            sample.audio,
        )
        with torch.no_grad():
            logits, rows = smoke_student(collate([full]), "mixed")  # every text target of c
        logp = torch.log_softmax(logits.float(), -1)
        picked = [float(logp[n, full.ids[w]]) for n, w in enumerate(rows.w.tolist()) if w >= len(sample.ids)]
        assert len(picked) == len(option)
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
    predictions = predict(smollm, [build_prompt(i, [], 30) for i in items], "text")
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


@pytest.fixture(scope="module")
def text_accuracy(smollm, cloze_prompts):
    return accuracy(predict(smollm, cloze_prompts, "text"), [p.item for p in cloze_prompts])


@pytest.mark.slow
def test_smollm2_reads_the_offline_benchmark_well_above_chance(cloze_prompts, text_accuracy):
    assert {len(p.item.options) for p in cloze_prompts} == {4}
    assert text_accuracy >= CHANCE + ABOVE_CHANCE_MARGIN


@pytest.mark.slow
def test_the_cascade_on_clean_speech_is_close_to_text(smollm, cloze_prompts, text_accuracy):
    items = [p.item for p in cloze_prompts]
    text = text_accuracy
    cascade = accuracy(predict(smollm, cloze_prompts, "cascade"), items)
    assert abs(cascade - text) <= CASCADE_TOLERANCE and cascade >= CHANCE + 0.3
    heard = [t for p in cloze_prompts for t in p.transcripts]
    assert len(heard) == sum(len(p.spoken_texts()) for p in cloze_prompts) and all(heard)


def test_a_prompt_the_tts_cannot_speak_gets_no_audio_and_its_reason_is_kept(smoke_config):
    """A piece longer than tts.max_seconds fails its whole TTS batch; the others of that batch are
    still spoken, and only the prompts needing the failed piece are left without audio."""
    short = smoke_config.model_copy(deep=True)
    short.tts.max_seconds = 2.0
    long_item = Item("long", "t", " ".join(["a rather long sentence spoken slowly"] * 4), ("x", "y"), 0)
    prompts = [build_prompt(ITEM, [], 30), build_prompt(long_item, [], 30)]
    unspeakable = speak_prompts(short, prompts)
    assert prompts[0].audio is not None and prompts[1].audio is None
    (reason,) = unspeakable.values()
    assert "longer than the 2 s limit" in reason
