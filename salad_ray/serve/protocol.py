"""OpenAI's chat completions, the part a speech-in, text-out student answers.

Request (``POST /v1/chat/completions``), as OpenAI and vLLM take it::

    {"model": "<served name>",                       optional; another name is HTTP 404
     "messages": [{"role": "system" | "developer" | "user" | "assistant",
                   "content": "text" | [{"type": "text", "text": "..."},
                                        {"type": "input_audio",
                                         "input_audio": {"data": "<base64>", "format": "wav" | "flac" | "mp3"}}]},
                  ...],                              several turns; audio in any of them
     "max_tokens" | "max_completion_tokens": N,      default: student_server.default_max_tokens
     "temperature": 0..2 (1), "top_p": (0, 1] (1), "stop": str | [str] (up to 4), "seed": int,
     "stream": false, "stream_options": {"include_usage": true}}

Other OpenAI fields are accepted and ignored, as vLLM does. A request that cannot be answered raises
:class:`RequestError` naming the field (``messages[0].content[1].input_audio.data``); the server
answers it with HTTP 400 and OpenAI's error body. Answers: a ``chat.completion`` object, or with
``stream`` the ``chat.completion.chunk`` objects of OpenAI's stream (first the role, then the text as
it is made, then the finish reason), a last chunk with ``usage`` and no choices (unless
``stream_options.include_usage`` is false), and ``[DONE]``. ``prompt_tokens`` counts the prompt's LLM
positions, text tokens and speech frames alike.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from salad_ray.audio import AudioError, read_audio
from salad_ray.config import StudentServerConfig
from salad_ray.generation import SamplingParams
from salad_ray.serve.prompt import Turn


class RequestError(ValueError):
    """A request the student cannot answer; ``field`` names where, the message what is wrong."""

    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(f"{field}: {message}")
        self.field, self.status = field, status


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class InputAudio(_Lenient):
    data: str  # base64 of the encoded file
    format: Literal["wav", "flac", "mp3"]


class AudioPart(_Lenient):
    type: Literal["input_audio"]
    input_audio: InputAudio


PART_TYPES = ("text", "input_audio")
Part = Annotated[TextPart | AudioPart, Field(discriminator="type")]


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: list[Part] = Field(min_length=1)

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return [{"type": "text", "text": v}] if isinstance(v, str) else v


class StreamOptions(_Lenient):
    include_usage: bool = True


class ChatCompletionRequest(_Lenient):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)  # one answer per request

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, v: Any) -> Any:
        return [] if v is None else [v] if isinstance(v, str) else v

    def answer_limit(self) -> tuple[str, int | None]:
        """The field that bounds the answer's length, and its value (None: the server's default)."""
        if self.max_completion_tokens is not None:
            return "max_completion_tokens", self.max_completion_tokens
        return "max_tokens", self.max_tokens

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            self.answer_limit()[1], self.temperature, self.top_p, self.seed, tuple(self.stop)
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is None or self.stream_options.include_usage


def _field(loc: tuple) -> str:
    """A pydantic location as a path: ('messages', 0, 'content', 1, 'input_audio', 'input_audio',
    'data') -> messages[0].content[1].input_audio.data (a tagged union adds its tag after the index)."""
    out = ""
    for k, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif k and isinstance(loc[k - 1], int) and part in PART_TYPES and loc[k - 2 : k - 1] == ("content",):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


def parse_request(body: Any) -> ChatCompletionRequest:
    """The validated request, or RequestError naming the first offending field."""
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        field = _field(first["loc"])
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):  # a content part's type
            field += ".type"
        raise RequestError(field, first["msg"]) from None


def decode_audio(part: InputAudio, field: str, settings: StudentServerConfig) -> np.ndarray:
    """A part's audio as validated 16 kHz mono float32 (any rate and channel count comes in)."""
    try:
        raw = base64.b64decode(part.data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{field}.data", "is not valid base64") from None
    if not raw:
        raise RequestError(f"{field}.data", "is empty")
    try:
        wave = read_audio(raw, name=f"{part.format} audio", max_seconds=settings.max_audio_seconds)
    except AudioError as e:
        raise RequestError(f"{field}.data", str(e)) from None
    peak = float(np.abs(wave).max())
    if peak == 0 or 20 * np.log10(peak) < settings.silence_dbfs:
        level = f"{20 * np.log10(peak):.0f} dBFS" if peak else "digital silence"
        raise RequestError(
            f"{field}.data", f"the audio is silent ({level}; the floor is {settings.silence_dbfs:g} dBFS)"
        )
    return wave


def to_turns(request: ChatCompletionRequest, settings: StudentServerConfig) -> list[Turn]:
    """The conversation with every audio part decoded; ``developer`` speaks as ``system``."""
    turns = []
    for m, message in enumerate(request.messages):
        parts: list[str | np.ndarray] = []
        for p, part in enumerate(message.content):
            if isinstance(part, AudioPart):
                parts.append(
                    decode_audio(part.input_audio, f"messages[{m}].content[{p}].input_audio", settings)
                )
            else:
                parts.append(part.text)
        turns.append(Turn("system" if message.role == "developer" else message.role, parts))
    return turns


# ------------------------------------------------------------------------------------- answers


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(error: RequestError) -> dict[str, Any]:
    kind = "NotFoundError" if error.status == 404 else "BadRequestError"
    return {"error": {"message": str(error), "type": kind, "param": error.field, "code": error.status}}


@dataclass(frozen=True)
class Completion:
    """The identity every object of one answer carries."""

    model: str
    id: str
    created: int  # Unix seconds

    @classmethod
    def new(cls, model: str) -> Completion:
        return cls(model, f"chatcmpl-{uuid.uuid4().hex}", int(time.time()))

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def response(self, text: str, finish: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """The whole answer: a ``chat.completion``."""
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
        return {
            **self._head("chat.completion"),
            "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens),
        }

    def chunk(self, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        """One ``chat.completion.chunk`` of the stream."""
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """The stream's last chunk: no choices, the usage."""
        return {
            **self._head("chat.completion.chunk"),
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens),
        }
