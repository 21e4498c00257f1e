"""Building blocks shared by the native LLaDA and Dream implementations.

Both checkpoints are LLaMA-shaped: RMSNorm computed in float32, half-rotation (NeoX) RoPE, gated SiLU MLP,
bidirectional attention. Only the numerics the references specify differ (LLaDA rotates in float32, Dream
casts cos/sin to the activation dtype first), so those are parameters here rather than two copies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """RMSNorm as both references compute it: normalise in float32, cast back, then scale (and shift)."""

    def __init__(self, dim: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        h = h.to(dtype) * self.weight
        return h + self.bias if self.bias is not None else h


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos/sin tables [B, 1, T, head_dim] in float32 for absolute ``positions`` [B, T]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.to(torch.float32)[..., None] * inv_freq  # [B, T, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, hd]
    return emb.cos(), emb.sin()


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, full_precision: bool) -> Tensor:
    """Half-rotation RoPE on [B, H, T, hd].

    ``full_precision`` (LLaDA): rotate in float32 then cast back. Otherwise (Dream/HF Qwen2): cast cos/sin to
    the activation dtype and rotate there.
    """
    if full_precision:
        xf = x.float()
        return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + _rotate_half(x) * sin


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
    """Bidirectional attention of q [B, Hq, Tq, D] over k/v [B, Hkv, Tk, D]; key_mask [B, Tk] True = attend.

    Dispatches to the kernels (dllm.kernels) (Triton on CUDA, PyTorch elsewhere) so the model never knows which runs.
    """
    from dllm.kernels import attention as kernel_attention

    return kernel_attention(q, k, v, key_mask=key_mask, scale=1.0 / math.sqrt(q.shape[-1]))


ACTIVATIONS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def rotary_self_attention(model, x: Tensor, q_proj: nn.Module, k_proj: nn.Module, v_proj: nn.Module,
                          positions: Tensor, key_mask: Tensor | None, kv_hook, layer: int) -> Tensor:
    """Project ``x`` [B, T, d] to heads, rotate q/k at their absolute ``positions`` (the model's RoPE
    precision), let the cache hook (if any) extend/replace the keys, then attend. Returns [B, T, Hq*D]."""
    b, t, _ = x.shape
    q = q_proj(x).view(b, t, model.num_heads, model.head_dim).transpose(1, 2)
    k = k_proj(x).view(b, t, model.num_kv_heads, model.head_dim).transpose(1, 2)
    v = v_proj(x).view(b, t, model.num_kv_heads, model.head_dim).transpose(1, 2)
    cos, sin = rope_cos_sin(positions, model.head_dim, model.rope_theta)
    q = apply_rope(q, cos, sin, model.rope_full_precision)
    k = apply_rope(k, cos, sin, model.rope_full_precision)
    if kv_hook is not None:
        k, v, key_mask = kv_hook(layer, k, v)
    out = attention(q, k, v, key_mask)
    b, h, t, d = out.shape
    return out.transpose(1, 2).reshape(b, t, h * d)
