"""Scoring options: each option's length-normalised log-likelihood as a continuation of a prompt.

For a prompt x (few-shot examples, then the item's context) and an option o of |o| tokens,

    score(o) = (1 / |o|) * sum_{t=1}^{|o|} log P(o_t | x, o_<t)

and the prediction is the option with the highest score (the paper's scoring; per-token
normalisation keeps long options from losing by length alone). Each prompt runs once and its
options continue from its KV cache. The model is a
:class:`~salad_ray.model.student.SpeechLM`: in every mode the options are text, and the prompt is
text (``text``), speech spans for the spoken pieces (``speech``), or the ASR transcript of that
speech (``cascade``). The original LLM is a student before training: its LLM is the original
weights, and fed text it is exactly the original model.

A prompt is a list of pieces: few-shot contexts (spoken in speech mode), their right answers and a
blank line (always text), then the item's context (spoken). A spoken piece is cut into chunks of at
most ``span_words`` words, each synthesized on its own (as in training, and within Whisper's 30 s
window for the cascade). The shuffled-audio control (:func:`with_donor_context`) hears an item with
another item's spoken context in place of its own: same examples, same options, same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from salad_ray.batch import Sample, collate
from salad_ray.eval.items import Item
from salad_ray.interleave import TokenSpan
from salad_ray.metrics import per_sample
from salad_ray.model.student import SpeechLM

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


def context_pieces(prompt: Prompt) -> int:
    """How many pieces at the end of the prompt are the item's own context (its trailing spoken run)."""
    n = 0
    for piece in reversed(prompt.pieces):
        if not piece.spoken:
            break
        n += 1
    return n


def with_donor_context(prompt: Prompt, donor: Prompt) -> Prompt:
    """The shuffled-audio control of a prompt: its few-shot examples as they are, its own context's
    pieces and audio replaced by ``donor``'s (the options and the answer stay the item's)."""
    if prompt.audio is None or donor.audio is None:
        raise ValueError("the shuffled-audio control needs both prompts' audio")
    own, theirs = context_pieces(prompt), context_pieces(donor)
    if own == 0 or theirs == 0:
        raise ValueError(f"item {prompt.item.item_id} or {donor.item.item_id} has no spoken context")
    return Prompt(
        prompt.item,
        prompt.pieces[:-own] + donor.pieces[-theirs:],
        audio=list(prompt.audio[:-own]) + list(donor.audio[-theirs:]),
    )


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


def encode_prompt(tokenizer, bos_id: int | None, pieces: list[tuple[str, bool]]):
    """Token ids and spans of a prompt given as pieces (text, is_speech), one span per piece."""
    ids = [bos_id] if bos_id is not None else []
    spans = []
    for k, (text, speech) in enumerate(pieces):
        piece = tokenizer.encode(text if k == 0 else " " + text, add_special_tokens=False)
        if not piece:
            raise ValueError(f"the prompt piece {text!r} has no tokens")
        spans.append(TokenSpan(len(ids), len(ids) + len(piece), speech))
        ids.extend(piece)
    return ids, spans


def encode_option(tokenizer, option: str) -> list[int]:
    """An option's tokens, as a continuation after a space."""
    return tokenizer.encode(" " + option, add_special_tokens=False)


def prompt_tokens(tokenizer, bos_id: int | None, prompt: Prompt) -> int:
    """Text tokens of the prompt with its longest option."""
    ids, _ = encode_prompt(tokenizer, bos_id, [(p.text, False) for p in prompt.pieces])
    return len(ids) + max(len(encode_option(tokenizer, o)) for o in prompt.item.options)


def prompt_sample(student: SpeechLM, prompt: Prompt, mode: str) -> Sample:
    """The prompt in ``mode`` as a sample: text pieces, spoken pieces, or their transcripts."""
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
    ids, spans = encode_prompt(student.tokenizer, student.bos_id, pieces)
    audio = list(prompt.audio) if mode == "speech" else []
    return Sample(prompt.item.item_id, ids, spans, audio)


@torch.no_grad()
def option_scores(student: SpeechLM, prompt: Sample, options: list[list[int]]) -> np.ndarray:
    """Mean log-probability of each option's tokens after the prompt (module docstring).

    The prompt runs once (speech spans through the encoder and adapter) into a KV cache; the
    options then run together on copies of that cache, right-padded. Option token t is predicted
    by the prompt's last row (t = 0) or by the option's own row t - 1.
    """
    inputs, mask, _ = student.mixed_inputs(collate([prompt]).to(student.device))
    decoder = student._causal_lm().get_decoder()
    first = decoder(inputs_embeds=inputs, attention_mask=mask, use_cache=True)
    cache, last = first.past_key_values, first.last_hidden_state[:, -1:]  # (1, 1, H)
    n, longest = len(options), max(len(o) for o in options)
    ids = torch.zeros(n, longest, dtype=torch.long)
    valid = torch.zeros(n, longest, dtype=torch.bool)
    for k, option in enumerate(options):
        ids[k, : len(option)] = torch.tensor(option)
        valid[k, : len(option)] = True
    ids, valid = ids.to(student.device), valid.to(student.device)
    cache.batch_repeat_interleave(n)
    hidden = decoder(
        inputs_embeds=student._causal_lm().get_input_embeddings()(ids),
        attention_mask=torch.cat([mask.expand(n, -1), valid.long()], dim=1),
        past_key_values=cache,
    ).last_hidden_state  # (n, longest, H)
    predictors = torch.cat([last.expand(n, 1, -1), hidden[:, :-1]], dim=1)  # row t predicts token t
    logp = F.log_softmax(student.logits(predictors[valid]).float(), dim=-1)
    picked = logp.gather(1, ids[valid][:, None])[:, 0]
    owner = torch.arange(n, device=picked.device)[:, None].expand(n, longest)[valid]
    sums, counts = per_sample(picked, owner, n)
    return (sums / counts).numpy()


def predict(student: SpeechLM, prompts: list[Prompt], mode: str) -> np.ndarray:
    """The index of the best-scoring option of every prompt."""
    student.eval()
    out = []
    for prompt in prompts:
        options = [encode_option(student.tokenizer, o) for o in prompt.item.options]
        out.append(int(np.argmax(option_scores(student, prompt_sample(student, prompt, mode), options))))
    return np.array(out)
