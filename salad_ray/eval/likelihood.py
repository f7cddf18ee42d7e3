"""Scoring options: each option's length-normalised log-likelihood as a continuation of a prompt.

For a prompt x (few-shot examples, then the item's context) and an option o of |o| tokens,

    score(o) = (1 / |o|) * sum_{t=1}^{|o|} log P(o_t | x, o_<t)

and the prediction is the option with the highest score (the paper's scoring; per-token
normalisation keeps long options from losing by length alone). Each prompt runs once, packed
with all its options in one row where no option sees another, and a batch of prompts runs in one
forward (:func:`option_scores`). The model is a
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

import itertools
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


def packed_sample(prompt: Sample, options: list[list[int]]) -> Sample:
    """The prompt followed by every option's tokens, as one sample (the options are text)."""
    return Sample(prompt.sample_id, prompt.ids + [t for o in options for t in o], prompt.spans, prompt.audio)


def option_layout(prompt_len: int, option_lens: list[int], length: int) -> tuple[torch.Tensor, ...]:
    """Where the options of one packed row sit: (group, position, predictor rows).

    The row is the prompt's ``prompt_len`` positions of c, then option k's tokens, k = 1 .. n, then
    padding to ``length``. ``group`` is 0 on the prompt, k on option k and -1 on padding;
    ``position`` restarts at ``prompt_len`` for every option, so each option sits where it would
    after the prompt alone; ``predictors`` lists, option by option, the row predicting each of its
    tokens: the prompt's last row for token 0, the option's own row t - 1 for token t.
    """
    group = torch.full((length,), -1, dtype=torch.long)
    position = torch.zeros(length, dtype=torch.long)
    group[:prompt_len], position[:prompt_len] = 0, torch.arange(prompt_len)
    predictors, start = [], prompt_len
    for k, n in enumerate(option_lens, 1):
        group[start : start + n], position[start : start + n] = k, prompt_len + torch.arange(n)
        predictors += [prompt_len - 1, *range(start, start + n - 1)]
        start += n
    return group, position, torch.tensor(predictors, dtype=torch.long)


def option_mask(group: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) boolean attention of packed rows: row i sees row j <= i of the prompt or of its
    own option (padding sees padding), so no option sees another."""
    causal = torch.ones(group.shape[1], group.shape[1], dtype=torch.bool).tril()
    key, query = group[:, None, :], group[:, :, None]
    return (causal & ((key == 0) | (key == query)))[:, None]


@torch.no_grad()
def option_scores(
    student: SpeechLM, prompts: list[Sample], options: list[list[list[int]]]
) -> list[np.ndarray]:
    """Mean log-probability of each option's tokens after its prompt (module docstring), for a batch.

    Each prompt and all its options run as one packed row (:func:`packed_sample`): the options
    follow the prompt, each attending to the prompt and to itself only (:func:`option_mask`), at
    the positions it would have after the prompt alone (:func:`option_layout`). One forward scores
    every option of every prompt in the batch; the prompt runs once.
    """
    packed = collate([packed_sample(p, o) for p, o in zip(prompts, options, strict=True)])
    inputs, _, layouts = student.mixed_inputs(packed.to(student.device))
    length = inputs.shape[1]
    groups, positions, rows, targets = [], [], [], []
    for b, (layout, opts) in enumerate(zip(layouts, options, strict=True)):
        row_lens = [len(o) for o in opts]
        group, position, predictors = option_layout(layout.length - sum(row_lens), row_lens, length)
        groups.append(group)
        positions.append(position)
        rows.append(b * length + predictors)
        targets += [t for o in opts for t in o]
    lens = [len(o) for opts in options for o in opts]  # every option of the batch, in order
    owner = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
    mask = option_mask(torch.stack(groups)).to(student.device)
    decoder = student._causal_lm().get_decoder()
    position_ids = torch.stack(positions).to(student.device)
    hidden = decoder(inputs_embeds=inputs, attention_mask=mask, position_ids=position_ids).last_hidden_state
    hidden = hidden.flatten(0, 1)  # (B * L, H): row b * L + i is row i of prompt b
    logp = F.log_softmax(student.logits(hidden[torch.cat(rows).to(student.device)]).float(), dim=-1)
    picked = logp.gather(1, torch.tensor(targets, device=logp.device)[:, None])[:, 0]
    sums, counts = per_sample(picked, owner, len(lens))
    scores = (sums / counts).numpy()
    bounds = np.cumsum([0] + [len(opts) for opts in options])
    return [scores[a:b] for a, b in itertools.pairwise(bounds)]


def predict(student: SpeechLM, prompts: list[Prompt], mode: str, batch_size: int = 16) -> np.ndarray:
    """The index of the best-scoring option of every prompt, ``batch_size`` prompts per forward."""
    student.eval()
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        options = [[encode_option(student.tokenizer, o) for o in p.item.options] for p in chunk]
        samples = [prompt_sample(student, p, mode) for p in chunk]
        out += [int(np.argmax(s)) for s in option_scores(student, samples, options)]
    return np.array(out)
