"""The adapter: encoder frames -> frame stacking -> causal transformer -> LLM embedding space.

    x (B, T, D_enc)  --stack s-->  (B, ceil(T/s), s*D_enc)  --Linear-->  (B, T', d)
      --> L x [ h += Attn(RMSNorm(h));  h += SwiGLU(RMSNorm(h)) ]  --> RMSNorm --> Linear --> (B, T', H_llm)

Attention is causal with rotary position embeddings and grouped-query heads (``kv_heads`` key/value
heads shared by ``heads / kv_heads`` query heads each). Being causal, right padding never changes
the outputs at real frames, so spans of different lengths batch exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from salad_ray.config import AdapterConfig


def stack_frames(x: torch.Tensor, s: int) -> torch.Tensor:
    """(B, T, D) -> (B, ceil(T/s), s*D): concatenate s consecutive frames, zero-padding the last group."""
    b, t, d = x.shape
    pad = (-t) % s
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
    return x.reshape(b, (t + pad) // s, s * d)


def rotary(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate pairs (x[..., :h/2], x[..., h/2:]) of (B, heads, T, h) by position-dependent angles."""
    _, _, t, h = x.shape
    inv_freq = theta ** (-torch.arange(0, h, 2, device=x.device, dtype=torch.float32) / h)  # (h/2,)
    angles = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # (T, h/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : h // 2], x[..., h // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.heads, self.kv_heads = config.heads, config.kv_heads
        self.head_dim = config.d_model // config.heads
        self.theta, self.dropout = config.rope_theta, config.dropout
        self.q = nn.Linear(config.d_model, config.heads * self.head_dim, bias=False)
        self.kv = nn.Linear(config.d_model, 2 * config.kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(config.heads * self.head_dim, config.d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, _ = h.shape
        q = self.q(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k, v = (
            self.kv(h).view(b, t, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # (B, nkv, T, hd)
        q, k = rotary(q, self.theta), rotary(k, self.theta)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0, enable_gqa=True
        )  # (B, nh, T, hd)
        return self.o(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(h).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.mlp_norm = nn.RMSNorm(config.d_model)
        self.mlp = SwiGLU(config.d_model, config.mlp)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.attn_norm(h))
        return h + self.mlp(self.mlp_norm(h))


class Adapter(nn.Module):
    """Maps (B, T, in_dim) encoder frames to (B, ceil(T/stack), out_dim) LLM input embeddings."""

    def __init__(self, in_dim: int, out_dim: int, stack: int, config: AdapterConfig):
        super().__init__()
        self.stack = stack
        self.inp = nn.Linear(stack * in_dim, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.RMSNorm(config.d_model)
        self.out = nn.Linear(config.d_model, out_dim)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=1 / math.sqrt(module.in_features))
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def frames(self, encoder_frames: int) -> int:
        return -(-encoder_frames // self.stack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(stack_frames(x, self.stack))
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h))
