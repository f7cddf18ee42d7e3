"""A conversation of text and audio parts as one mixed speech/text sample of the student.

The conversation is rendered by the LLM's chat template (``tokenizer.apply_chat_template``, with the
generation prompt) with a one-off marker in place of each audio part; the text between markers is
tokenized (the template writes its own special tokens), and each audio part becomes speech spans in
its place: one span per piece of at most the encoder's window (``max_span_samples``), as evaluation
cuts long spoken contexts. An LLM without a chat template reads the turns as plain text, one per
line after its BOS token: a continuation, as the student was trained.

A served audio part has no transcript, so its spans are empty in w (``TokenSpan(i, i, True)``):
:meth:`SpeechLM.mixed_inputs` puts the span's adapter frames at position i of the context, however
many frames the audio makes. Parts of one message are joined by a newline.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from salad_ray.batch import Sample
from salad_ray.interleave import TokenSpan


@dataclass(frozen=True)
class Turn:
    role: str  # system | user | assistant
    parts: list[str | np.ndarray]  # text, or 16 kHz mono float32 audio


def _chunks(wave: np.ndarray, size: int) -> list[np.ndarray]:
    return [wave[i : i + size] for i in range(0, len(wave), size)]


def render(tokenizer, turns: list[Turn], marker: str) -> str:
    """The conversation as the LLM reads it, ``marker`` where each audio part goes."""
    contents = [
        "\n".join(marker if isinstance(part, np.ndarray) else part for part in turn.parts) for turn in turns
    ]
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": t.role, "content": c} for t, c in zip(turns, contents, strict=True)]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return (tokenizer.bos_token or "") + "\n".join(contents)


def chat_sample(tokenizer, turns: list[Turn], max_span_samples: int, sample_id: str = "request") -> Sample:
    """The conversation as a sample: w holds the rendered text, each audio part empty speech spans."""
    audio_parts = [part for turn in turns for part in turn.parts if isinstance(part, np.ndarray)]
    marker = f"<audio-{uuid.uuid4().hex}>"
    pieces = render(tokenizer, turns, marker).split(marker)
    if len(pieces) != len(audio_parts) + 1:
        raise ValueError(f"the chat template kept {len(pieces) - 1} of {len(audio_parts)} audio parts")
    ids: list[int] = []
    spans: list[TokenSpan] = []
    audio: list[np.ndarray] = []
    for k, piece in enumerate(pieces):
        if k:
            for chunk in _chunks(audio_parts[k - 1], max_span_samples):
                spans.append(TokenSpan(len(ids), len(ids), True))
                audio.append(chunk)
        piece_ids = tokenizer.encode(piece, add_special_tokens=False)
        if piece_ids:
            spans.append(TokenSpan(len(ids), len(ids) + len(piece_ids), False))
            ids.extend(piece_ids)
    return Sample(sample_id, ids, spans, audio)
