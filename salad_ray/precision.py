"""The autocast region a student runs in, for training and evaluation alike (``Precision``)."""

from __future__ import annotations

import contextlib
import warnings

import torch

from salad_ray.config import Precision


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matmuls in hardware: a GPU that supports bf16, or a CPU with
    avx512_bf16 or AMX. Elsewhere bf16 is emulated: on an AVX2-only CPU a bf16-autocast matmul with
    its backward measured ~55x slower than fp32 (README, *The local recipe*)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def autocast(precision: Precision, device: torch.device):
    """bf16 autocast where asked (``bf16``) or, under ``auto``, where the device computes bf16
    natively (:func:`native_bf16`); else fp32. ``bf16`` asked of a device without it is obeyed, with
    a warning: it is correct but many times slower."""
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    elif precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"bf16 autocast on a {device.type} without native bf16 (no avx512_bf16 or AMX) is emulated "
            "and many times slower than fp32; set the precision to auto",
            stacklevel=2,
        )
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
