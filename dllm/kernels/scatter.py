"""In-place write of freshly computed keys/values into a KV cache at per-row positions.

``scatter_kv(cache [B, H, Tc, D], fresh [B, H, Tn, D], positions [B, Tn])`` copies ``fresh[b, :, j]`` to
``cache[b, :, positions[b, j]]``. Rows may write different positions (ragged prompts, per-row block
offsets); ``positions[b, j] < 0`` skips that slot, which lets a batch with padding share one call.

Positions must be ``< Tc`` and unique per row. Out-of-range positions raise on the PyTorch path and are
dropped by the Triton kernel (checking would cost a device sync); duplicates leave an unspecified winner.
"""

from __future__ import annotations

import torch

from dllm.kernels.dispatch import triton_available, use_triton

if triton_available():
    import triton
    import triton.language as tl


def _check(cache: torch.Tensor, fresh: torch.Tensor, positions: torch.Tensor) -> None:
    if cache.dim() != 4 or fresh.dim() != 4:
        raise ValueError(f"scatter_kv wants cache/fresh [B, H, T, D]; got {tuple(cache.shape)}, {tuple(fresh.shape)}")
    b, h, _, d = cache.shape
    if fresh.shape[0] != b or fresh.shape[1] != h or fresh.shape[3] != d:
        raise ValueError(f"fresh {tuple(fresh.shape)} does not match cache {tuple(cache.shape)} in B, H or D")
    if positions.dtype != torch.int64 or tuple(positions.shape) != (b, fresh.shape[2]):
        got = f"{positions.dtype} {tuple(positions.shape)}"
        raise ValueError(f"positions must be int64 [B, Tn] = [{b}, {fresh.shape[2]}]; got {got}")
    if cache.device != fresh.device or cache.device != positions.device:
        raise ValueError("cache, fresh and positions must be on the same device")


def scatter_kv_torch(cache: torch.Tensor, fresh: torch.Tensor, positions: torch.Tensor) -> None:
    """Reference: advanced-index assignment through a [B, T, H, D] view of the cache (writes in place)."""
    _check(cache, fresh, positions)
    keep = positions >= 0
    rows = torch.arange(cache.shape[0], device=cache.device)[:, None].expand_as(positions)
    cache.transpose(1, 2)[rows[keep], positions[keep]] = fresh.transpose(1, 2)[keep].to(cache.dtype)


if triton_available():

    @triton.jit
    def _scatter_kernel(
        CACHE, FRESH, POS,
        H, Tc, Tn, D,
        scb, sch, sct, scd,
        sfb, sfh, sft, sfd,
        spb, spt,
        BLOCK_H: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        pid = tl.program_id(0)
        b = (pid // Tn).to(tl.int64)
        j = (pid % Tn).to(tl.int64)
        offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        offs_d = tl.arange(0, BLOCK_D)
        # Broadcast the slot's position to the tile before masking (scalar & tensor masks trip the interpreter).
        pos = tl.load(POS + b * spb + j * spt) + tl.zeros([BLOCK_H, BLOCK_D], tl.int64)
        m = (pos >= 0) & (pos < Tc) & (offs_h[:, None] < H) & (offs_d[None, :] < D)
        src = tl.load(FRESH + b * sfb + j * sft + offs_h[:, None] * sfh + offs_d[None, :] * sfd, mask=m)
        dst = CACHE + b * scb + pos * sct + offs_h[:, None] * sch + offs_d[None, :] * scd
        tl.store(dst, src.to(CACHE.dtype.element_ty), mask=m)


def scatter_kv_triton(cache: torch.Tensor, fresh: torch.Tensor, positions: torch.Tensor) -> None:
    """Triton path: one program per (row, fresh slot, head tile) copying a [heads, D] tile."""
    _check(cache, fresh, positions)
    bsz, h, tc, d = cache.shape
    tn = fresh.shape[2]
    if bsz == 0 or tn == 0 or h == 0 or d == 0:
        return
    if fresh.dtype != cache.dtype:
        # Cast with torch's rounding (round-to-nearest-even) so both paths write identical bits; Triton's
        # interpreter truncates fp32 -> bf16. Mixed dtypes are rare, so the extra copy is cheap overall.
        fresh = fresh.to(cache.dtype)
    block_d = triton.next_power_of_2(d)
    block_h = min(triton.next_power_of_2(h), max(1, 4096 // block_d))
    _scatter_kernel[(bsz * tn, triton.cdiv(h, block_h))](
        cache, fresh, positions,
        h, tc, tn, d,
        *cache.stride(), *fresh.stride(), *positions.stride(),
        BLOCK_H=block_h, BLOCK_D=block_d, num_warps=4,
    )


def scatter_kv(cache: torch.Tensor, fresh: torch.Tensor, positions: torch.Tensor) -> None:
    """``cache[b, :, positions[b, j]] = fresh[b, :, j]`` in place; negative positions are skipped."""
    if use_triton(cache, fresh, positions):
        scatter_kv_triton(cache, fresh, positions)
    else:
        scatter_kv_torch(cache, fresh, positions)
