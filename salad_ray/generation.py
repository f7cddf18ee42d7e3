"""Text generation from the student's mixed speech/text inputs, with a KV cache.

A request is a prompt of LLM input embeddings p (L_b, H), as :meth:`SpeechLM.mixed_inputs` makes
them from text tokens and speech frames, with its :class:`SamplingParams`. A batch of B requests:

* **prefill**: the prompts right-padded to (B, L, H) with mask (B, L) and position ids
  0 .. L_b - 1 per row; one decoder forward fills the cache, and row b's hidden state at L_b - 1
  predicts its first token.
* **decode**: step t feeds the active rows' newest tokens as embeddings (B', 1, H) at positions
  L_b + t, the mask grown by a column of ones. Attention reads the cached keys and values, so no
  earlier position is computed again. Rows that finish leave the batch and the cache
  (``DynamicCache.batch_select_indices``); the pad positions of short prompts stay masked.

Sampling, per row, from the logits z of the LLM's own output projection: temperature 0 is greedy
(argmax); otherwise softmax(z / T), restricted to the nucleus (the most likely tokens whose mass,
the last one included, first reaches top_p) and renormalised, then one draw from the row's own
``torch.Generator`` seeded by the request's seed, so a seeded request draws the same tokens alone
or in company. A row stops at an end-of-sequence id (finish ``stop``), after ``max_tokens`` tokens
(``length``), or when its caller ends it (a stop string, :class:`TextStream`).

Nothing here imports Ray: the Serve deployment and the terminal command share it.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.nn.utils.rnn import pad_sequence

if TYPE_CHECKING:
    from salad_ray.model.student import SpeechLM


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None  # None: the server's default (StudentEngine.prepare sets it)
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # stop strings (TextStream); the stop token ids are the LLM's own


@dataclass(frozen=True)
class Step:
    """What one decoding step made for one request: ``index`` in the batch, the ``token`` drawn and,
    when it was the request's last, why (``stop`` or ``length``)."""

    index: int
    token: int
    finish: str | None


def precision(device: torch.device, dtype: torch.dtype | None):
    """The autocast region the student runs in: ``dtype`` None is full precision."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def stop_token_ids(student: SpeechLM) -> frozenset[int]:
    """The LLM's end-of-sequence ids: its tokenizer's and its generation config's."""
    ids = {student.tokenizer.eos_token_id}
    config = getattr(student._causal_lm(), "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return frozenset(i for i in ids if i is not None)


def _generator(device: torch.device, seed: int | None) -> torch.Generator:
    rng = torch.Generator(device=device)
    if seed is None:
        rng.seed()  # non-deterministic
    else:
        rng.manual_seed(seed)
    return rng


def next_tokens(logits: torch.Tensor, params: list[SamplingParams], rngs: list[torch.Generator]) -> list[int]:
    """One token per row of (B, V) logits (module docstring)."""
    out = []
    for z, p, rng in zip(logits.float(), params, rngs, strict=True):
        if p.temperature == 0:
            out.append(int(z.argmax()))
            continue
        probs = torch.softmax(z / p.temperature, dim=-1)
        if p.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            outside = sorted_probs.cumsum(0) - sorted_probs >= p.top_p  # mass before it already reaches top_p
            probs = torch.zeros_like(probs).scatter(0, order[~outside], sorted_probs[~outside])
        out.append(int(torch.multinomial(probs, 1, generator=rng)))
    return out


class BatchDecoder:
    """One batch of requests decoded together over one KV cache (module docstring)."""

    def __init__(
        self,
        student: SpeechLM,
        prompts: list[torch.Tensor],
        params: list[SamplingParams],
        autocast: torch.dtype | None = None,
    ):
        if not prompts or len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts for {len(params)} sampling parameters")
        if any(p.max_tokens is None or p.max_tokens < 1 for p in params):
            raise ValueError(f"every request needs max_tokens >= 1, got {[p.max_tokens for p in params]}")
        self.student, self.params, self.autocast = student, params, autocast
        self.stop_ids = stop_token_ids(student)
        self.active = list(range(len(prompts)))  # batch indices still decoding, in cache order
        self.made = [0] * len(prompts)
        self.rngs = [_generator(student.device, p.seed) for p in params]
        self._prompts = prompts
        self._cache = None
        self._positions: torch.Tensor | None = None  # (B',) position of each active row's next token
        self._mask: torch.Tensor | None = None  # (B', cache length)
        self._last: list[int] = []

    @property
    def done(self) -> bool:
        return not self.active

    def end(self, index: int) -> None:
        """Drop request ``index`` from the batch (its caller needs no more tokens)."""
        if index in self.active:
            self._keep([b for b in self.active if b != index])

    @torch.no_grad()
    def step(self) -> list[Step]:
        """Decode one token for every active request: prefill on the first call, then one position."""
        if self.done:
            return []
        decoder = self.student._causal_lm().get_decoder()
        with precision(self.student.device, self.autocast):
            if self._cache is None:
                hidden = self._prefill(decoder)
            else:
                new = torch.tensor(self._last, device=self.student.device)[:, None]  # (B', 1)
                self._mask = torch.cat([self._mask, torch.ones_like(new)], dim=1)
                out = decoder(
                    inputs_embeds=self.student._causal_lm().get_input_embeddings()(new),
                    attention_mask=self._mask,
                    position_ids=self._positions[:, None],
                    past_key_values=self._cache,
                    use_cache=True,
                )
                self._positions = self._positions + 1
                hidden = out.last_hidden_state[:, -1]  # (B', H)
            logits = self.student.logits(hidden)  # (B', V)
        tokens = next_tokens(
            logits, [self.params[b] for b in self.active], [self.rngs[b] for b in self.active]
        )
        steps = []
        for b, token in zip(self.active, tokens, strict=True):
            self.made[b] += 1
            steps.append(Step(b, token, self._finish(b, token)))
        self._last = tokens
        self._keep([s.index for s in steps if s.finish is None])
        return steps

    def _finish(self, index: int, token: int) -> str | None:
        if token in self.stop_ids:
            return "stop"
        return "length" if self.made[index] >= self.params[index].max_tokens else None

    def _prefill(self, decoder) -> torch.Tensor:
        lengths = torch.tensor([p.shape[0] for p in self._prompts], device=self.student.device)
        inputs = pad_sequence(self._prompts, batch_first=True)  # (B, L, H)
        positions = torch.arange(inputs.shape[1], device=inputs.device)
        self._mask = (positions[None] < lengths[:, None]).long()  # (B, L)
        out = decoder(
            inputs_embeds=inputs,
            attention_mask=self._mask,
            position_ids=positions[None].expand(len(self._prompts), -1),
            use_cache=True,
        )
        self._cache, self._positions = out.past_key_values, lengths
        self._prompts = []
        return out.last_hidden_state[torch.arange(len(lengths)), lengths - 1]  # (B, H)

    def _keep(self, indices: list[int]) -> None:
        if indices == self.active:
            return
        rows = [self.active.index(b) for b in indices]
        if self._cache is None:  # not prefilled yet
            self._prompts = [self._prompts[r] for r in rows]
        elif indices:
            self._last = [self._last[r] for r in rows]
            select = torch.tensor(rows, device=self.student.device)
            self._cache.batch_select_indices(select)
            self._mask, self._positions = self._mask[select], self._positions[select]
        self.active = indices


class TextStream:
    """The text of one answer as its tokens arrive: decoded incrementally (special tokens skipped),
    cut at the first stop string (which is not part of the answer), and released only where no
    stop string could still begin and no multi-byte character is half decoded."""

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer, self.stop = tokenizer, tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of text already released
        self.stopped = False  # a stop string was found

    def push(self, token: int) -> str:
        """Add a token; return the newly releasable text."""
        self.ids.append(token)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hold = max((len(s) for s in self.stop), default=1) - 1
        hits = [i for s in self.stop if (i := self.text.find(s, max(0, self.sent - hold))) >= 0]
        if hits:
            self.text, self.stopped = self.text[: min(hits)], True
            return self.flush()
        safe = len(self.text) - hold
        while safe > self.sent and self.text[safe - 1] == "\ufffd":  # a character still incomplete
            safe -= 1
        return self._release(safe)

    def flush(self) -> str:
        """The rest of the text, at the end of the answer."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        out, self.sent = self.text[self.sent : upto], upto
        return out
