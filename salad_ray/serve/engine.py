"""A saved student answering conversations: the same class in a Serve replica and in a terminal.

:meth:`StudentEngine.prepare` turns one request into its prompt embeddings (its audio through the
frozen encoder and the adapter, its text through the LLM's embeddings: :meth:`SpeechLM.mixed_inputs`)
and checks that prompt and answer fit the context; :meth:`StudentEngine.stream` decodes a batch of
prepared requests together (:class:`salad_ray.generation.BatchDecoder`) and yields, step by step,
what each request's answer gains. A GPU is used when there is one, with bf16 autocast where it
supports it (``student_server.dtype``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from salad_ray.batch import collate
from salad_ray.config import StudentServerConfig
from salad_ray.generation import BatchDecoder, SamplingParams, TextStream, precision
from salad_ray.model.student import SpeechLM
from salad_ray.serve.prompt import Turn, chat_sample
from salad_ray.serve.protocol import RequestError


@dataclass(frozen=True)
class Prepared:
    """A request ready to decode: its prompt's LLM input embeddings (L, H) and how to sample."""

    embeds: torch.Tensor
    params: SamplingParams

    @property
    def prompt_tokens(self) -> int:
        return self.embeds.shape[0]


@dataclass(frozen=True)
class Delta:
    """What one decoding step adds to an answer: its new text, and when it is over, why."""

    text: str
    finish: str | None
    completion_tokens: int


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """``student_server.dtype`` on ``device``: bf16 autocast, or None for full precision."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


class StudentEngine:
    def __init__(self, student: SpeechLM, settings: StudentServerConfig, model_name: str):
        self.student = student.eval()
        self.settings, self.model_name = settings, model_name
        self.autocast = autocast_dtype(settings.dtype, student.device)
        self.context = settings.max_context or student._causal_lm().config.max_position_embeddings

    @classmethod
    def load(
        cls, directory: str | Path, settings: StudentServerConfig, device: str | None = None
    ) -> StudentEngine:
        """A saved student (``SpeechLM.load``) on ``device`` (default: the GPU if there is one)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        student = SpeechLM.load(directory, device=device)
        return cls(student, settings, settings.model_name or Path(directory).resolve().name)

    def prepare(
        self, turns: list[Turn], params: SamplingParams | None = None, limit_field: str = "max_tokens"
    ) -> Prepared:
        """One request's prompt embeddings and sampling (:meth:`prepare_many`); RequestError if it
        does not fit."""
        prepared = self.prepare_many([(turns, params, limit_field)])[0]
        if isinstance(prepared, RequestError):
            raise prepared
        return prepared

    @torch.no_grad()
    def prepare_many(
        self, requests: list[tuple[list[Turn], SamplingParams | None, str]]
    ) -> list[Prepared | RequestError]:
        """The prompt embeddings and sampling of several requests (turns, params, limit_field), their
        audio through the encoder and adapter together. ``params.max_tokens`` None takes the default
        answer length; a request whose prompt or answer does not fit the context gets a RequestError
        in its place, on ``limit_field`` (the request field that asked for the length)."""
        samples = [
            chat_sample(self.student.tokenizer, turns, self.student.encoder.max_samples, f"request-{n}")
            for n, (turns, _, _) in enumerate(requests)
        ]
        with precision(self.student.device, self.autocast):
            inputs, mask, _ = self.student.mixed_inputs(collate(samples).to(self.student.device))
        lengths = mask.sum(dim=1).tolist()
        return [
            self._fit(inputs[n, :length], params or SamplingParams(), field)
            for n, ((_, params, field), length) in enumerate(zip(requests, lengths, strict=True))
        ]

    def _fit(self, embeds: torch.Tensor, params: SamplingParams, limit_field: str) -> Prepared | RequestError:
        length = embeds.shape[0]
        room = self.context - length
        if room < 1:
            return RequestError(
                "messages", f"the prompt fills {length} positions; the context holds {self.context}"
            )
        if params.max_tokens is None:
            return Prepared(embeds, replace(params, max_tokens=min(self.settings.default_max_tokens, room)))
        if params.max_tokens > room:
            return RequestError(
                limit_field,
                f"{params.max_tokens} tokens do not fit: the prompt takes {length} of the context's "
                f"{self.context} positions, which leaves {room}",
            )
        return Prepared(embeds, params)

    @torch.no_grad()
    def stream(self, batch: list[Prepared]) -> Iterator[list[Delta | None]]:
        """Decode the batch; per step, one entry per request: what its answer gains, None once over."""
        decoder = BatchDecoder(
            self.student, [p.embeds for p in batch], [p.params for p in batch], self.autocast
        )
        texts = [TextStream(self.student.tokenizer, p.params.stop) for p in batch]
        while not decoder.done:
            out: list[Delta | None] = [None] * len(batch)
            for step in decoder.step():
                text = texts[step.index]
                delta = "" if step.token in decoder.stop_ids else text.push(step.token)
                finish = step.finish
                if text.stopped:
                    decoder.end(step.index)
                    finish = "stop"
                if finish:
                    delta += text.flush()
                out[step.index] = Delta(delta, finish, decoder.made[step.index])
            yield out

    def answer(self, turns: list[Turn], params: SamplingParams | None = None) -> Iterator[Delta]:
        """One conversation's answer as it is made (the terminal command's path)."""
        for step in self.stream([self.prepare(turns, params)]):
            if step[0] is not None:
                yield step[0]
