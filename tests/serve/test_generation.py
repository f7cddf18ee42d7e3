"""Generation in-process, no Ray: the KV-cache decoder against transformers' own generate, batches
against single requests, sampling, stop strings, and conversations laid out as the student reads them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from salad_ray.config import StudentServerConfig
from salad_ray.generation import BatchDecoder, SamplingParams, TextStream
from salad_ray.serve.engine import StudentEngine
from salad_ray.serve.prompt import Turn, chat_sample

pytestmark = pytest.mark.slow  # loads a student (whisper-tiny + a tiny LLM), seconds

CHAT = [{"role": "user", "content": "Tell me about the weather in the mountains."}]


@pytest.fixture(scope="module")
def engine(student_dir) -> StudentEngine:
    return StudentEngine.load(student_dir, StudentServerConfig(), device="cpu")


def hf_greedy(engine: StudentEngine, messages: list[dict], max_new_tokens: int) -> list[int]:
    """What the student's LLM answers greedily to the chat-templated text, by transformers' generate."""
    tokenizer, llm = engine.student.tokenizer, engine.student.llm
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = llm.generate(**encoded, do_sample=False, max_new_tokens=max_new_tokens)
    return out[0, encoded["input_ids"].shape[1] :].tolist()


def tokens(engine: StudentEngine, turns: list[Turn], params: SamplingParams) -> list[int]:
    prepared = engine.prepare(turns, params)
    decoder = BatchDecoder(engine.student, [prepared.embeds], [prepared.params])
    out = []
    while not decoder.done:
        out += [s.token for s in decoder.step()]
    return out


def test_text_answers_are_the_llms_own_greedy_answers(engine):
    expected = hf_greedy(engine, CHAT, 24)
    got = tokens(engine, [Turn("user", [CHAT[0]["content"]])], SamplingParams(24, temperature=0))
    assert got == expected


def test_each_token_after_the_prompt_is_one_new_position(engine, utterances):
    """The KV cache: after the prefill every decoder call reads one position per row, never the past."""
    lengths = []
    decoder_module = engine.student._causal_lm().get_decoder()
    hook = decoder_module.register_forward_pre_hook(
        lambda _, args, kwargs: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    try:
        turns = [Turn("user", [utterances["weather"], "What was said?"])]
        made = len(tokens(engine, turns, SamplingParams(10, temperature=0)))
    finally:
        hook.remove()
    assert lengths[0] == engine.prepare(turns).prompt_tokens  # the prefill: the whole prompt, once
    assert lengths[1:] == [1] * (made - 1)


def test_a_batch_answers_as_each_request_alone(engine, utterances):
    """Prompts of different lengths, with and without audio, prepared together (their audio through
    the encoder as one batch) and decoded together over one cache."""
    requests = [
        ([Turn("user", [utterances["weather"]])], SamplingParams(12, temperature=0)),
        ([Turn("user", ["Hi"])], SamplingParams(5, temperature=0)),
        (
            [Turn("system", ["Be brief."]), Turn("user", [utterances["numbers"], "Again?"])],
            SamplingParams(16, temperature=0),
        ),
        ([Turn("user", ["Count to ten, please."])], SamplingParams(9, temperature=0.8, top_p=0.9, seed=3)),
    ]
    alone = [tokens(engine, turns, params) for turns, params in requests]
    prepared = engine.prepare_many([(turns, params, "max_tokens") for turns, params in requests])
    for one, (turns, params) in zip(prepared, requests, strict=True):
        torch.testing.assert_close(one.embeds, engine.prepare(turns, params).embeds)
    decoder = BatchDecoder(engine.student, [p.embeds for p in prepared], [p.params for p in prepared])
    together: list[list[int]] = [[] for _ in requests]
    while not decoder.done:
        for step in decoder.step():
            together[step.index].append(step.token)
    assert together == alone


def test_sampling_follows_its_seed_and_top_p(engine):
    turns = [Turn("user", ["Name a colour."])]
    a = tokens(engine, turns, SamplingParams(12, temperature=1.0, seed=7))
    assert a == tokens(engine, turns, SamplingParams(12, temperature=1.0, seed=7))
    draws = {tuple(tokens(engine, turns, SamplingParams(12, temperature=1.5, seed=s))) for s in range(4)}
    assert len(draws) > 1
    # a nucleus this small holds only the most likely token: greedy
    greedy = tokens(engine, turns, SamplingParams(12, temperature=0))
    assert tokens(engine, turns, SamplingParams(12, temperature=1.0, top_p=1e-6, seed=1)) == greedy


def test_stop_strings_are_cut_and_held_back(tokenizer):
    ids = tokenizer.encode(" the cat sat on the mat and then the dog", add_special_tokens=False)
    stream = TextStream(tokenizer, stop=("on the m",))
    released = [stream.push(t) for t in ids]
    text = "".join(released) + stream.flush()
    assert text == " the cat sat " and stream.stopped
    assert not any("on" in r for r in released)  # the start of the stop string was never released
    plain = TextStream(tokenizer)
    assert "".join(plain.push(t) for t in ids) + plain.flush() == " the cat sat on the mat and then the dog"


def test_a_conversation_reads_through_the_chat_template(tokenizer, utterances):
    wave = utterances["weather"]
    turns = [
        Turn("system", ["You listen."]),
        Turn("user", ["Hear this:", wave, "What was said?"]),
        Turn("assistant", ["Something about weather."]),
        Turn("user", [wave]),
    ]
    sample = chat_sample(tokenizer, turns, max_span_samples=16_000 * 30)
    speech = [s for s in sample.spans if s.speech]
    assert len(speech) == 2 and all(s.start == s.end for s in speech)  # no transcript: empty in w
    text = tokenizer.decode(sample.ids)
    assert text.startswith("<|im_start|>system\nYou listen.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")  # the generation prompt
    before = tokenizer.decode(sample.ids[: speech[0].start])
    after = tokenizer.decode(sample.ids[speech[0].start :])
    assert before.endswith("Hear this:\n") and after.startswith("\nWhat was said?<|im_end|>")
    assert tokenizer.decode(sample.ids[: speech[1].start]).endswith("<|im_start|>user\n")
    np.testing.assert_array_equal(sample.audio[0], wave)


def test_long_audio_becomes_spans_of_the_encoders_window(tokenizer):
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 16_000 * 25).astype(np.float32)
    sample = chat_sample(tokenizer, [Turn("user", [wave])], max_span_samples=16_000 * 10)
    assert [len(a) for a in sample.audio] == [160_000, 160_000, 80_000]
    assert len({s.start for s in sample.spans if s.speech}) == 1  # one after another, in one place


def test_an_llm_without_a_chat_template_reads_plain_text(tokenizer, utterances):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    sample = chat_sample(plain, [Turn("user", ["Once upon a time", utterances["weather"]])], 16_000 * 30)
    assert plain.decode(sample.ids) == plain.bos_token + "Once upon a time\n"
    assert sample.spans[-1].speech and sample.spans[-1].start == len(sample.ids)


def test_max_tokens_past_the_context_names_the_field(student_dir):
    from salad_ray.serve.protocol import RequestError

    engine = StudentEngine.load(student_dir, StudentServerConfig(max_context=64), device="cpu")
    turns = [Turn("user", ["Hello there."])]
    prepared = engine.prepare(turns)
    assert prepared.params.max_tokens == 64 - prepared.prompt_tokens  # the default, capped by the context
    with pytest.raises(RequestError, match="max_completion_tokens: 64 tokens do not fit") as e:
        engine.prepare(turns, SamplingParams(64), "max_completion_tokens")
    assert e.value.field == "max_completion_tokens"
    fits, too_long = engine.prepare_many(
        [(turns, None, "max_tokens"), (turns, SamplingParams(64), "max_tokens")]
    )
    assert fits.params == prepared.params and isinstance(too_long, RequestError)  # the others still prepared
    assert torch.is_tensor(prepared.embeds) and prepared.embeds.ndim == 2
