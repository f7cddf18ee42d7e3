"""The autocast rule (salad_ray.precision): bf16 under ``auto`` only where the device has it natively."""

from __future__ import annotations

import warnings

import pytest
import torch

from salad_ray.precision import autocast, native_bf16

CPU = torch.device("cpu")


def _dtype_inside(precision: str) -> torch.dtype:
    with autocast(precision, CPU):
        return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype


def _cpu_with(monkeypatch, **flags: bool) -> None:
    """This CPU's capabilities with the bf16 flags set as given (the other CPU kind, simulated)."""
    capabilities = {**torch.cpu.get_capabilities(), "avx512_bf16": False, "amx_bf16": False, **flags}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)


def test_auto_is_bf16_exactly_where_the_cpu_computes_it_natively(monkeypatch):
    capabilities = torch.cpu.get_capabilities()
    assert native_bf16(CPU) is bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    for flags, expected in (
        ({}, torch.float32),
        ({"avx512_bf16": True}, torch.bfloat16),
        ({"amx_bf16": True}, torch.bfloat16),
    ):
        _cpu_with(monkeypatch, **flags)
        assert _dtype_inside("auto") == expected, flags
        assert _dtype_inside("fp32") == torch.float32


def test_bf16_asked_of_a_cpu_without_it_is_obeyed_with_a_warning(monkeypatch):
    _cpu_with(monkeypatch)
    with pytest.warns(UserWarning, match="emulated"):
        assert _dtype_inside("bf16") == torch.bfloat16
    _cpu_with(monkeypatch, avx512_bf16=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dtype_inside("bf16") == torch.bfloat16
