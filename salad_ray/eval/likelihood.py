"""Scoring options: each option's length-normalised log-likelihood as a continuation of a prompt.

For a prompt x (few-shot examples, then the item's context) and an option o of |o| tokens,

    score(o) = (1 / |o|) * sum_{t=1}^{|o|} log P(o_t | x, o_<t)

and the prediction is the option with the highest score (the paper's scoring; per-token
normalisation keeps long options from losing by length alone). The model is a
:class:`~salad_ray.model.student.SpeechLM`: in every mode the options are text, and the prompt is
text (``text``), speech spans for the spoken pieces (``speech``), or the ASR transcript of that
speech (``cascade``). The original LLM is a student before training: its LLM is the original
weights, and fed text it is exactly the original model.

A prompt is a list of pieces: few-shot contexts (spoken in speech mode), their right answers and a
blank line (always text), then the item's context (spoken). A spoken piece is cut into chunks of at
most ``span_words`` words, each synthesized on its own (as in training, and within Whisper's 30 s
window for the cascade).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from salad_ray.batch import Sample, collate
from salad_ray.eval.items import Item
from salad_ray.interleave import TokenSpan, mixed_layout
from salad_ray.metrics import per_sample
from salad_ray.model.student import Rows, SpeechLM, mixed_rows

MODES = ("text", "speech", "cascade")


@dataclass(frozen=True)
class Piece:
    text: str
    spoken: bool  # spoken in speech mode (and transcribed in cascade mode)


@dataclass
class Prompt:
    """An item with its few-shot examples, as pieces; audio and transcripts of the spoken pieces."""

    item: Item
    pieces: list[Piece]
    audio: list[np.ndarray] | None = None  # one waveform per spoken piece
    transcripts: list[str] | None = None  # one ASR transcript per spoken piece

    def spoken_texts(self) -> list[str]:
        return [p.text for p in self.pieces if p.spoken]


def _chunks(text: str, span_words: int) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + span_words]) for i in range(0, len(words), span_words)]


def build_prompt(item: Item, shots: list[Item], span_words: int) -> Prompt:
    pieces: list[Piece] = []
    for shot in shots:
        pieces += [Piece(c, True) for c in _chunks(shot.context, span_words)]
        pieces.append(Piece(shot.options[shot.answer] + "\n\n", False))
    pieces += [Piece(c, True) for c in _chunks(item.context, span_words)]
    return Prompt(item, pieces)


def fit_prompt(
    item: Item, shots: list[Item], span_words: int, max_tokens: int, count: Callable[[Prompt], int]
) -> Prompt:
    """The prompt with as many of ``shots`` as fit ``max_tokens`` text tokens (``count``) with its
    longest option; the same prompt then serves every mode, so modes compare like with like."""
    for n in range(len(shots), -1, -1):
        prompt = build_prompt(item, shots[:n], span_words)
        if count(prompt) <= max_tokens or n == 0:
            return prompt
    raise AssertionError("unreachable")


def encode(tokenizer, bos_id: int | None, pieces: list[tuple[str, bool]], option: str):
    """Token ids, spans and the index of the option's first token, for pieces (text, is_speech)."""
    ids = [bos_id] if bos_id is not None else []
    spans = []
    for k, (text, speech) in enumerate(pieces):
        piece = tokenizer.encode(text if k == 0 else " " + text, add_special_tokens=False)
        if not piece:
            raise ValueError(f"the prompt piece {text!r} has no tokens")
        spans.append(TokenSpan(len(ids), len(ids) + len(piece), speech))
        ids.extend(piece)
    start = len(ids)
    option_ids = tokenizer.encode(" " + option, add_special_tokens=False)
    spans.append(TokenSpan(start, start + len(option_ids), False))
    return ids + option_ids, spans, start


def prompt_tokens(tokenizer, bos_id: int | None, prompt: Prompt) -> int:
    """Text tokens of the prompt with its longest option."""
    pieces = [(p.text, False) for p in prompt.pieces]
    return max(len(encode(tokenizer, bos_id, pieces, o)[0]) for o in prompt.item.options)


def option_samples(student: SpeechLM, prompt: Prompt, mode: str) -> list[tuple[Sample, int]]:
    """One sample per option of a prompt in ``mode``, with the index of the option's first token."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "text":
        pieces = [(p.text, False) for p in prompt.pieces]
    elif mode == "speech":
        if prompt.audio is None:
            raise ValueError(f"item {prompt.item.item_id}: speech mode needs the prompt's audio")
        pieces = [(p.text, p.spoken) for p in prompt.pieces]
    else:
        if prompt.transcripts is None:
            raise ValueError(f"item {prompt.item.item_id}: cascade mode needs the prompt's transcripts")
        heard = iter(prompt.transcripts)
        # an empty transcript (ASR heard nothing) still leaves a token in the prompt
        pieces = [((next(heard) or "...") if p.spoken else p.text, False) for p in prompt.pieces]
    audio = list(prompt.audio) if mode == "speech" else []
    out = []
    for n, option in enumerate(prompt.item.options):
        ids, spans, start = encode(student.tokenizer, student.bos_id, pieces, option)
        out.append((Sample(f"{prompt.item.item_id}/{n}", ids, spans, audio), start))
    return out


@torch.no_grad()
def continuation_scores(student: SpeechLM, samples: list[Sample], starts: list[int]) -> np.ndarray:
    """Mean log-probability of the tokens from ``starts[b]`` on of each sample (the option)."""
    batch = collate(samples)
    layouts = [mixed_layout(len(s.ids), s.spans, [student.frames(len(a)) for a in s.audio]) for s in samples]
    rows = mixed_rows(layouts, max(lay.length for lay in layouts))
    keep = rows.w >= torch.tensor(starts)[rows.sample]
    rows = Rows(rows.sample[keep], rows.flat[keep], rows.w[keep])
    logits, rows = student(batch, "mixed", rows=rows)
    targets = batch.w_ids[rows.sample, rows.w].to(logits.device)
    logp = F.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]
    sums, counts = per_sample(logp, rows.sample, len(samples))
    return (sums / counts).numpy()


def predict(student: SpeechLM, prompts: list[Prompt], mode: str, batch_size: int) -> np.ndarray:
    """The index of the best-scoring option of every prompt."""
    student.eval()
    flat = [
        (p, s, start)
        for p, prompt in enumerate(prompts)
        for s, start in option_samples(student, prompt, mode)
    ]
    scores = np.empty(len(flat))
    for b in range(0, len(flat), batch_size):
        chunk = flat[b : b + batch_size]
        scores[b : b + len(chunk)] = continuation_scores(
            student, [s for _, s, _ in chunk], [x for _, _, x in chunk]
        )
    out, k = [], 0
    for prompt in prompts:
        n = len(prompt.item.options)
        out.append(int(np.argmax(scores[k : k + n])))
        k += n
    return np.array(out)
