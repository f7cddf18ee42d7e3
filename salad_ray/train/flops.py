"""Model FLOPs of a training step, and the matmul peak they are measured against (MFU).

Per sequence of T positions through a transformer of N weights, L layers and width d
(PaLM, appendix B): forward + backward = 6·N·T for weights that are trained, plus 12·L·d·T² for
attention. Weights that are frozen but that the backward pass goes through (the LLM under LoRA)
cost 4·N·T: no weight gradients. The frozen speech encoder runs forward only, outside the model
being trained, and is not counted. MFU = model FLOPs / (seconds × peak × workers), the peak being
a dense matmul measured on the same device and dtype.
"""

from __future__ import annotations

import time

import torch

from salad_ray.model.student import SpeechLM


def _n(module: torch.nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def step_flops(student: SpeechLM, llm_lengths: list[int], adapter_lengths: list[int]) -> float:
    """FLOPs of forward + backward over sequences of the given lengths (LLM positions, adapter frames)."""
    config = student._causal_lm().config
    trained, frozen = _n(student.llm, True), _n(student.llm, False)
    per_token = 6 * trained + 4 * frozen
    a = student.models.adapter
    llm = sum(per_token * t + 12 * config.num_hidden_layers * config.hidden_size * t * t for t in llm_lengths)
    adapter = sum(6 * _n(student.adapter) * t + 12 * a.layers * a.d_model * t * t for t in adapter_lengths)
    return float(llm + adapter)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Measured dense matmul throughput in FLOP/s (best of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best
