"""Bidirectional attention of the active block's queries over cached + fresh keys/values.

Shapes: q ``[B, Hq, Tq, D]``, k/v ``[B, Hkv, Tk, D]`` with ``Hq % Hkv == 0`` (GQA: query head ``h`` reads kv
head ``h // (Hq // Hkv)``), optional ``key_mask`` ``[B, Tk]`` bool (True = attend). No causal mask: masked
diffusion LMs attend both ways. Tq is small (one block, 1..64) and Tk long (up to a few thousand), which is
decode-shaped, so the Triton kernel is built for it:

* the ``Hq // Hkv`` query heads that share a kv head are packed into the rows of one tile, so each K/V tile
  is loaded once per group instead of once per query head (GQA without a materialised repeat);
* the keys are split across programs (flash-decoding) when ``batch x kv-heads`` alone cannot fill the GPU;
  each split keeps a flash-attention online softmax in fp32, and a small combine kernel merges the splits.

A query row whose keys are all masked never occurs in our use (the block's own keys are always visible),
so its output is unspecified: SDPA returns NaN or zeros depending on the torch version and backend (torch
2.13 on CPU: zeros), and the Triton kernel returns NaN (0 / 0). Other rows are unaffected.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dllm.kernels.dispatch import (
    TRITON_INTERPRETED,
    device_parallelism,
    fallback_warning,
    kernel_mode,
    triton_available,
    use_triton,
)

if triton_available():
    import triton
    import triton.language as tl


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> None:
    """Raise a ``ValueError`` naming the mismatch; kernels index memory blindly, so check up front."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        shapes = f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        raise ValueError(f"attention wants 4-d q/k/v [B, H, T, D]; got {shapes}")
    b, hq, _, d = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    if k.shape[0] != b or k.shape[3] != d:
        raise ValueError(f"k/v {tuple(k.shape)} do not match q {tuple(q.shape)} in batch or head dim")
    hkv = k.shape[1]
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of kv heads ({hkv})")
    if key_mask is not None and (key_mask.dtype != torch.bool or tuple(key_mask.shape) != (b, k.shape[2])):
        got = f"{key_mask.dtype} {tuple(key_mask.shape)}"
        raise ValueError(f"key_mask must be bool [B, Tk] = [{b}, {k.shape[2]}]; got {got}")


def attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Reference: SDPA with kv heads expanded (no ``enable_gqa``, so torch 2.4 works too)."""
    _check_shapes(q, k, v, key_mask)
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False, scale=scale)


def _triton_unsupported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """Why the Triton kernel cannot take these tensors, or None when it can."""
    d = q.shape[-1]
    if d < 16 or d > 256 or d & (d - 1):
        return f"head dim {d} is not a power of two in 16..256"
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"dtype {q.dtype}"
    if k.dtype != q.dtype or v.dtype != q.dtype:
        return f"mixed dtypes q={q.dtype} k={k.dtype} v={v.dtype}"
    if q.shape[2] == 0 or k.shape[2] == 0 or q.shape[0] == 0:
        return "empty tensor"
    return None


if triton_available():

    @triton.jit
    def _packed_rows(Hkv, Tq, rows, GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
        """This program's batch, KV head and tile of packed query rows: row r is query token r % Tq of query
        head hkv * GROUP + r // Tq (program axes 0 = row tile, 1 = batch x KV head)."""
        pid_bh = tl.program_id(1)
        b = (pid_bh // Hkv).to(tl.int64)
        hkv = (pid_bh % Hkv).to(tl.int64)
        offs_r = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        hq = hkv * GROUP + offs_r // Tq
        t = offs_r % Tq
        return b, hkv, offs_r, offs_r < rows, hq, t, tl.arange(0, BLOCK_D)

    @triton.jit
    def _store_normalised(OUT, acc, l, b, hq, t, row_ok, offs_d, sob, soh, sot, sod):
        """``acc / l`` into OUT[b, hq, t, :]; padding rows get l = 1 to avoid 0/0 and are not stored."""
        out = acc / tl.where(row_ok, l, 1.0)[:, None]
        o_ptrs = OUT + b * sob + hq[:, None] * soh + t[:, None] * sot + offs_d[None, :] * sod
        tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=row_ok[:, None])

    @triton.jit
    def _attn_fwd_kernel(
        Q, K, V, MASK, OUT, PACC, PML,
        qk_scale,  # softmax scale * log2(e): the kernel works in base 2
        Hkv, Tq, Tk, rows, tiles_per_split, n_splits,
        sqb, sqh, sqt, sqd,
        skb, skh, skt, skd,
        svb, svh, svt, svd,
        smb, smt,
        sob, soh, sot, sod,
        GROUP: tl.constexpr,
        HAS_MASK: tl.constexpr,
        SPLIT: tl.constexpr,
        PRECISION: tl.constexpr,
        UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        pid_bh = tl.program_id(1)
        pid_s = tl.program_id(2)
        b, hkv, offs_r, row_ok, hq, t, offs_d = _packed_rows(Hkv, Tq, rows, GROUP, BLOCK_M, BLOCK_D)
        q_ptrs = Q + b * sqb + hq[:, None] * sqh + t[:, None] * sqt + offs_d[None, :] * sqd
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)

        k_base = K + b * skb + hkv * skh
        v_base = V + b * svb + hkv * svh
        n_lo = pid_s * tiles_per_split * BLOCK_N
        n_hi = tl.minimum(n_lo + tiles_per_split * BLOCK_N, Tk)

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start in range(n_lo, n_hi, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            n_ok = offs_n < n_hi
            kt = tl.load(k_base + offs_n[None, :] * skt + offs_d[:, None] * skd, mask=n_ok[None, :], other=0.0)
            if UPCAST:
                kt = kt.to(tl.float32)
            s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
            keep = n_ok
            if HAS_MASK:
                km = tl.load(MASK + b * smb + offs_n * smt, mask=n_ok, other=0)
                keep = keep & (km != 0)
            s = tl.where(keep[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            # A row with no visible key so far keeps m = -inf; exponentiate against 0 to avoid inf - inf.
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_ref)
            p = tl.exp2(s - m_ref[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            vt = tl.load(v_base + offs_n[:, None] * svt + offs_d[None, :] * svd, mask=n_ok[:, None], other=0.0)
            if UPCAST:
                vt = vt.to(tl.float32)
            acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision=PRECISION)
            m_i = m_new

        if SPLIT:
            # Unnormalised partials; the combine kernel rescales them to a common max.
            part = (pid_bh * n_splits + pid_s).to(tl.int64) * rows
            tl.store(PACC + (part + offs_r)[:, None] * BLOCK_D + offs_d[None, :], acc, mask=row_ok[:, None])
            tl.store(PML + (part + offs_r) * 2, m_i, mask=row_ok)
            tl.store(PML + (part + offs_r) * 2 + 1, l_i, mask=row_ok)
        else:
            _store_normalised(OUT, acc, l_i, b, hq, t, row_ok, offs_d, sob, soh, sot, sod)

    @triton.jit
    def _attn_combine_kernel(
        PACC, PML, OUT,
        Hkv, Tq, rows, n_splits,
        sob, soh, sot, sod,
        GROUP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        b, hkv, offs_r, row_ok, hq, t, offs_d = _packed_rows(Hkv, Tq, rows, GROUP, BLOCK_M, BLOCK_D)
        base = tl.program_id(1).to(tl.int64) * n_splits * rows

        m_all = tl.full([BLOCK_M], float("-inf"), tl.float32)
        for s in range(n_splits):
            m_s = tl.load(PML + (base + s * rows + offs_r) * 2, mask=row_ok, other=float("-inf"))
            m_all = tl.maximum(m_all, m_s)
        m_ref = tl.where(m_all == float("-inf"), 0.0, m_all)
        l_all = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for s in range(n_splits):
            idx = base + s * rows + offs_r
            m_s = tl.load(PML + idx * 2, mask=row_ok, other=float("-inf"))
            l_s = tl.load(PML + idx * 2 + 1, mask=row_ok, other=0.0)
            a_s = tl.load(PACC + idx[:, None] * BLOCK_D + offs_d[None, :], mask=row_ok[:, None], other=0.0)
            w = tl.exp2(m_s - m_ref)
            l_all += w * l_s
            acc += w[:, None] * a_s
        _store_normalised(OUT, acc, l_all, b, hq, t, row_ok, offs_d, sob, soh, sot, sod)


def _attn_config(rows: int, d: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for the decode-shaped problem.

    BLOCK_M covers the packed query rows (min 16 for ``tl.dot``, max 64 to bound registers); BLOCK_N shrinks
    with D so a K plus a V tile per pipeline stage stays well inside shared memory. Checked by compiling for
    sm_90 (ptxas resource usage): no register spills for D in 16..256 and BLOCK_M in 16..64; fp32 needs
    narrower key tiles and 8 warps (its IEEE dot spilled heavily at BLOCK_N=64). Not yet tuned on a GPU.
    """
    block_m = min(64, max(16, triton.next_power_of_2(rows)))
    if dtype == torch.float32:
        block_n = 32 if d <= 64 else 16
        num_warps = 4 if d <= 16 else 8
    else:
        block_n = 64 if d <= 128 else 32
        num_warps = 4 if d <= 128 else 8
    return block_m, block_n, num_warps, 2


def attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    scale: float | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Triton path; ``num_splits`` forces the number of key splits (default: enough to fill the device)."""
    _check_shapes(q, k, v, key_mask)
    why = _triton_unsupported(q, k, v)
    if why is not None:
        raise ValueError(f"attention_triton cannot run this input: {why}")
    if any(t is not None and t.device != q.device for t in (k, v, key_mask)):
        raise ValueError("q, k, v and key_mask must be on the same device")
    bsz, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    group = hq // hkv
    rows = group * tq
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    block_m, block_n, num_warps, num_stages = _attn_config(rows, d, q.dtype)

    m_blocks = triton.cdiv(rows, block_m)
    n_tiles = triton.cdiv(tk, block_n)
    if num_splits is None:
        # Flash-decoding: split the keys until ~2 programs per SM, keeping >= 2 key tiles per split
        # (a guess that keeps the partial-output traffic small; not yet tuned on a GPU).
        base = m_blocks * bsz * hkv
        num_splits = min(triton.cdiv(2 * device_parallelism(q), base), max(1, n_tiles // 2))
    num_splits = max(1, min(int(num_splits), n_tiles))
    tiles_per_split = triton.cdiv(n_tiles, num_splits)
    num_splits = triton.cdiv(n_tiles, tiles_per_split)  # drop splits that would get no keys

    out = torch.empty((bsz, hq, tq, d), device=q.device, dtype=q.dtype)
    mask = key_mask.view(torch.uint8) if key_mask is not None else q
    smb, smt = (mask.stride(0), mask.stride(1)) if key_mask is not None else (0, 0)
    split = num_splits > 1
    if split:
        pacc = torch.empty((bsz * hkv * num_splits * rows, d), device=q.device, dtype=torch.float32)
        pml = torch.empty((bsz * hkv * num_splits * rows, 2), device=q.device, dtype=torch.float32)
    else:
        pacc = pml = out
    precision = "ieee" if q.dtype == torch.float32 else "tf32"  # fp32 inputs: no silent TF32 rounding
    # Triton's CPU interpreter computes bf16 tl.dot wrongly (numpy has no bf16): upcast there only.
    upcast = TRITON_INTERPRETED and q.dtype == torch.bfloat16
    _attn_fwd_kernel[(m_blocks, bsz * hkv, num_splits)](
        q, k, v, mask, out, pacc, pml,
        scale * 1.4426950408889634,
        hkv, tq, tk, rows, tiles_per_split, num_splits,
        *q.stride(), *k.stride(), *v.stride(), smb, smt, *out.stride(),
        GROUP=group, HAS_MASK=key_mask is not None, SPLIT=split, PRECISION=precision, UPCAST=upcast,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=d,
        num_warps=num_warps, num_stages=num_stages,
    )
    if split:
        _attn_combine_kernel[(m_blocks, bsz * hkv)](
            pacc, pml, out,
            hkv, tq, rows, num_splits,
            *out.stride(),
            GROUP=group, BLOCK_M=block_m, BLOCK_D=d,
            num_warps=num_warps,
        )
    return out


#: Shape rule of the ``auto`` kernel mode, from ``benchmarks/kernels.py`` on an H200 (README, Benchmarks): the
#: split-KV kernel beat PyTorch's attention at B=1 with 32 KV heads for Tk = 512 / 1024 / 2048 (1.07x / 1.66x /
#: 2.02x) and with GQA 28:4 at Tk = 2048 (2.64x), and tied at B=8 x 32 KV heads x Tk = 1024 (0.99x). It splits the
#: keys to fill the GPU when there are few (batch, KV head) pairs; with many, PyTorch's kernel is as good. Shapes
#: outside the measured ones follow the rule by extrapolation; ``DLLM_KERNELS=triton`` forces the kernel.
TRITON_ATTENTION_MIN_KEYS = 512
TRITON_ATTENTION_MAX_PAIRS = 256  #: batch x KV heads at which the measured gain was gone (8 x 32)


def triton_attention_pays(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether the measured shape rule picks the Triton kernel for ``q`` [B, Hq, Tq, D], ``k`` [B, Hkv, Tk, D]."""
    pairs = k.shape[0] * k.shape[1]
    return k.shape[2] >= TRITON_ATTENTION_MIN_KEYS and pairs < TRITON_ATTENTION_MAX_PAIRS


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Bidirectional GQA attention ``[B, Hq, Tq, D]`` in q's dtype; Triton on CUDA where the measured shape rule
    says it is faster (:func:`triton_attention_pays`; always with ``DLLM_KERNELS=triton``), PyTorch elsewhere.

    The Triton kernel has no backward, so whenever autograd needs a graph through the inputs (training) the
    PyTorch path runs instead, whatever the kernel mode: a kernel output would silently cut the gradient of
    every attention projection (seen: ``train-tiny --device cuda`` from a checkpoint with head dim 32 fell
    from 77% to 9% held-out while its loss rose).
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return attention_torch(q, k, v, key_mask, scale)
    if use_triton(q, k, v) and (kernel_mode() == "triton" or triton_attention_pays(q, k)):
        why = _triton_unsupported(q, k, v)
        if why is None:
            return attention_triton(q, k, v, key_mask, scale)
        fallback_warning("attention", why)
    return attention_torch(q, k, v, key_mask, scale)
