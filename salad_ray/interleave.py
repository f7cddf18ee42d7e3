"""Mixed speech/text sequences: the pure text w, the mixed context c, and the map between them.

A transcript of words is cut into spans; some spans are spoken (audio), the rest stay text.

* ``w`` is the token ids of the whole transcript (optionally after a BOS token), made by tokenizing
  span by span (every span after the first with a leading space), so every span is a contiguous token
  range of w. For byte-level BPE tokenizers (GPT-2 style: Llama 3, Qwen, SmolLM) this equals
  tokenizing the joined text, because their pre-tokenizer never merges across a space.
* ``c`` is w with each speech span's tokens replaced by that span's adapter frames.

Training targets are the positions of c whose *next* element is a text token: for a text token at
c position j (j >= 1) holding w[i], the student's prediction at row j - 1 of c is compared with the
teacher's distribution for token i, Q(. | w_<i), and with the student's own prediction at row i - 1
of w. The teacher's row i (see :mod:`salad_ray.teacher`) is the distribution that predicts w[i].

Modes (the paper's): ``utterance`` is one speech span then a text continuation; ``interleaved``
alternates text spans of 10-30 words with speech spans of 5-15 words, starting with either.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from salad_ray.config import InterleaveConfig, InterleaveMode


@dataclass(frozen=True)
class WordSpan:
    """Words [start, end) of a transcript, spoken or left as text."""

    start: int
    end: int
    speech: bool


@dataclass(frozen=True)
class TokenSpan:
    """Tokens [start, end) of w that come from one word span."""

    start: int
    end: int
    speech: bool


def plan_spans(n_words: int, config: InterleaveConfig, rng: np.random.Generator) -> list[WordSpan]:
    """Cut ``n_words`` words into speech and text spans (lengths drawn uniformly from the config ranges).

    Utterance mode speaks the first span and keeps at least one word of text after it. Interleaved
    mode alternates from a randomly chosen first kind, the last span cut short by the end of the
    transcript; a text too short to put text after some speech span that way is planned in
    utterance mode instead, so every plan has a speech span followed by a text target.
    """
    if n_words < 2:
        raise ValueError(f"a transcript needs at least 2 words to mix speech and text, got {n_words}")
    if config.mode == InterleaveMode.INTERLEAVED:
        spans, start, speech = [], 0, bool(rng.integers(2))
        while start < n_words:
            lo, hi = config.speech_words if speech else config.text_words
            end = min(start + int(rng.integers(lo, hi + 1)), n_words)
            spans.append(WordSpan(start, end, speech))
            start, speech = end, not speech
        if any(a.speech and not b.speech for a, b in itertools.pairwise(spans)):
            return spans
    lo, hi = config.speech_words
    cut = min(int(rng.integers(lo, hi + 1)), n_words - 1)
    return [WordSpan(0, cut, True), WordSpan(cut, n_words, False)]


def span_text(words: list[str], span: WordSpan) -> str:
    return " ".join(words[span.start : span.end])


def tokenize_spans(
    tokenizer, words: list[str], spans: list[WordSpan], bos_id: int | None, max_tokens: int | None = None
) -> tuple[list[int], list[TokenSpan], list[WordSpan]]:
    """Tokenize span by span into w; returns (w ids, token spans, the word spans kept).

    With ``max_tokens``, spans that would end past it are dropped (a sample is cut at a span boundary,
    never inside a spoken span); a first span that alone is too long raises ValueError.
    """
    ids = [bos_id] if bos_id is not None else []
    token_spans: list[TokenSpan] = []
    for k, span in enumerate(spans):
        text = span_text(words, span)
        piece = tokenizer.encode(text if k == 0 else " " + text, add_special_tokens=False)
        if max_tokens is not None and len(ids) + len(piece) > max_tokens:
            if not token_spans:
                raise ValueError(f"the first span alone has {len(ids) + len(piece)} tokens > {max_tokens}")
            break
        token_spans.append(TokenSpan(len(ids), len(ids) + len(piece), span.speech))
        ids.extend(piece)
    return ids, token_spans, spans[: len(token_spans)]


@dataclass(frozen=True)
class MixedLayout:
    """Where everything of one sample sits in c.

    Attributes:
        length: len(c).
        text_src: (len(c),) the w index of the text token at each c position, -1 for a speech frame.
        speech_slices: for each speech span in order, the c range [start, end) its frames fill.
        c_rows, w_rows: (T,) the targets: the student's row ``c_rows[t]`` of c predicts w[w_rows[t]].
    """

    length: int
    text_src: np.ndarray
    speech_slices: list[tuple[int, int]]
    c_rows: np.ndarray
    w_rows: np.ndarray


def mixed_layout(w_len: int, spans: list[TokenSpan], frames: list[int]) -> MixedLayout:
    """Lay out c for a w of ``w_len`` tokens whose speech spans become ``frames[k]`` frames each."""
    speech = [s for s in spans if s.speech]
    if len(frames) != len(speech):
        raise ValueError(f"{len(speech)} speech spans but {len(frames)} frame counts")
    src: list[np.ndarray] = []
    slices: list[tuple[int, int]] = []
    pos = 0  # next w index not yet placed
    c_len = 0
    for span, n in zip(speech, frames, strict=True):
        if n < 1:
            raise ValueError(f"speech span {span} has {n} frames; every spoken span needs at least one")
        src.append(np.arange(pos, span.start))
        c_len += span.start - pos
        src.append(np.full(n, -1))
        slices.append((c_len, c_len + n))
        c_len += n
        pos = span.end
    src.append(np.arange(pos, w_len))
    text_src = np.concatenate(src).astype(np.int64)
    j = np.nonzero(text_src[1:] >= 0)[0] + 1  # c positions >= 1 holding text
    return MixedLayout(len(text_src), text_src, slices, j - 1, text_src[j])


def text_rows(w_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets of the student fed w itself: row i - 1 predicts w[i], for i = 1 .. w_len - 1."""
    i = np.arange(1, w_len)
    return i - 1, i
