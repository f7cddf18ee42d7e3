import itertools

import numpy as np
import pytest

from salad_ray.config import InterleaveConfig, InterleaveMode, TextSource
from salad_ray.corpus import read_texts
from salad_ray.interleave import TokenSpan, mixed_layout, plan_spans, text_rows, tokenize_spans


def test_interleaved_plan_alternates_within_the_paper_ranges():
    config = InterleaveConfig()
    for seed in range(20):
        spans = plan_spans(200, config, np.random.default_rng(seed))
        assert spans[0].start == 0 and spans[-1].end == 200
        for a, b in itertools.pairwise(spans):
            assert a.end == b.start and a.speech != b.speech
        for s in spans[:-1]:  # the last span may be cut by the end of the text
            lo, hi = config.speech_words if s.speech else config.text_words
            assert lo <= s.end - s.start <= hi


def test_short_interleaved_texts_still_have_text_after_speech():
    config = InterleaveConfig()
    for seed in range(30):
        spans = plan_spans(12, config, np.random.default_rng(seed))
        assert any(a.speech and not b.speech for a, b in itertools.pairwise(spans)), spans


def test_utterance_plan_is_speech_then_text():
    config = InterleaveConfig(mode=InterleaveMode.UTTERANCE)
    spans = plan_spans(40, config, np.random.default_rng(0))
    assert [s.speech for s in spans] == [True, False]
    assert 5 <= spans[0].end <= 15 and spans[1].end == 40
    short = plan_spans(3, config, np.random.default_rng(0))
    assert short[0].end == 2 and short[1].end == 3  # one word of text is always kept
    with pytest.raises(ValueError, match="at least 2 words"):
        plan_spans(1, config, np.random.default_rng(0))


def test_span_tokenization_equals_joint_tokenization(tokenizer):
    texts = list(read_texts(TextSource(kind="fortunes", categories=["science", "wisdom"], limit=40)))
    config = InterleaveConfig(text_words=(2, 6), speech_words=(1, 4))
    bos = tokenizer.bos_token_id
    for n, record in enumerate(texts):
        words = record.text.split()
        spans = plan_spans(len(words), config, np.random.default_rng(n))
        ids, token_spans, kept = tokenize_spans(tokenizer, words, spans, bos)
        assert kept == spans
        assert ids == [bos, *tokenizer.encode(" ".join(words), add_special_tokens=False)]
        for span, tspan in zip(spans, token_spans, strict=True):
            text = " ".join(words[span.start : span.end])
            assert tokenizer.decode(ids[tspan.start : tspan.end]).strip() == text


def test_tokenize_cuts_at_a_span_boundary(tokenizer):
    words = ("one two three four five six seven eight nine ten " * 3).split()
    spans = plan_spans(
        len(words), InterleaveConfig(text_words=(3, 3), speech_words=(3, 3)), np.random.default_rng(0)
    )
    ids, token_spans, kept = tokenize_spans(tokenizer, words, spans, None, max_tokens=10)
    assert len(ids) <= 10 and token_spans[-1].end == len(ids)
    assert len(kept) == len(token_spans) < len(spans)
    with pytest.raises(ValueError, match="first span alone"):
        tokenize_spans(tokenizer, words, spans, None, max_tokens=1)


def test_mixed_layout_lines_up_token_by_token():
    # w = [B, t1 .. t8]; text w[0:3], speech w[3:6] -> 4 frames, text w[6:9]
    spans = [TokenSpan(0, 3, False), TokenSpan(3, 6, True), TokenSpan(6, 9, False)]
    layout = mixed_layout(9, spans, [4])
    assert layout.length == 10
    assert layout.text_src.tolist() == [0, 1, 2, -1, -1, -1, -1, 6, 7, 8]
    assert layout.speech_slices == [(3, 7)]
    # targets: text tokens at c positions 1, 2, 7, 8, 9 predicted from the row before each
    assert layout.c_rows.tolist() == [0, 1, 6, 7, 8]
    assert layout.w_rows.tolist() == [1, 2, 6, 7, 8]
    for c_row, w_row in zip(layout.c_rows, layout.w_rows, strict=True):
        assert layout.text_src[c_row + 1] == w_row  # the next element of c is w[w_row]
        if layout.text_src[c_row] >= 0:  # a text row of c sits on w[w_row - 1]
            assert layout.text_src[c_row] == w_row - 1
        else:  # a speech row is the last frame of the span that replaced w[..w_row - 1]
            assert (c_row + 1) in [end for _, end in layout.speech_slices]


def test_mixed_layout_starting_with_speech_and_text_only():
    layout = mixed_layout(5, [TokenSpan(0, 3, True), TokenSpan(3, 5, False)], [2])
    assert layout.text_src.tolist() == [-1, -1, 3, 4]
    assert layout.c_rows.tolist() == [1, 2] and layout.w_rows.tolist() == [3, 4]
    plain = mixed_layout(4, [TokenSpan(0, 4, False)], [])
    assert plain.text_src.tolist() == [0, 1, 2, 3]
    r_c, r_w = text_rows(4)
    assert plain.c_rows.tolist() == r_c.tolist() and plain.w_rows.tolist() == r_w.tolist()


def test_mixed_layout_rejects_inconsistent_frames():
    spans = [TokenSpan(0, 2, False), TokenSpan(2, 4, True)]
    with pytest.raises(ValueError, match="1 speech spans but 2"):
        mixed_layout(4, spans, [3, 3])
    with pytest.raises(ValueError, match="at least one"):
        mixed_layout(4, spans, [0])
