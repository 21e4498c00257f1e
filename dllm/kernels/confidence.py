"""The confidence step of threshold decoding, without materialising full-vocabulary probabilities.

``top2_confidence`` turns logits ``[N, V]`` into the top-1 / runner-up probabilities and tokens of
``softmax(logits in fp32)``. The only vocabulary-wide quantities needed are the two largest logits and the
softmax denominator, so the Triton kernel streams the logits once: each lane keeps a running best,
second-best and an online sum of exp (rescaled as its max grows), and the lanes are reduced at the end.
When there are too few rows to fill the GPU (a block of 32 positions against V = 126k), the vocabulary is
split across programs and a tiny kernel merges the splits; with enough rows it is one program per row.

Ties: ``idx1`` is the first index of the maximum logit; ``idx2`` is the first index of the maximum over the
other entries (so two equal maxima give ``p2 == p1``). Rows with fewer than two finite logits have an
unspecified ``idx2``.

``threshold_commit`` is the Fast-dLLM rule: commit every candidate whose confidence reaches the threshold,
and always the single most confident candidate (first index on ties), so each step makes progress; rows
without candidates commit nothing.
"""

from __future__ import annotations

import torch

from dllm.kernels.dispatch import device_parallelism, triton_available, use_triton

if triton_available():
    import triton
    import triton.language as tl


def _check_logits(logits: torch.Tensor) -> None:
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"top2_confidence wants logits [N, V] with V > 0; got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point; got {logits.dtype}")


def top2_confidence_torch(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference: logsumexp plus two first-index argmaxes on an fp32 copy."""
    _check_logits(logits)
    x = logits.to(torch.float32, copy=True)
    lse = torch.logsumexp(x, dim=-1)
    i1 = x.argmax(dim=-1)  # argmax returns the first occurrence of the maximum
    v1 = x.gather(-1, i1[:, None])[:, 0]
    x.scatter_(-1, i1[:, None], float("-inf"))
    i2 = x.argmax(dim=-1)
    v2 = x.gather(-1, i2[:, None])[:, 0]
    return torch.exp(v1 - lse), i1, torch.exp(v2 - lse), i2


def _check_commit(conf: torch.Tensor, candidates: torch.Tensor) -> None:
    if conf.dim() != 2 or conf.shape != candidates.shape:
        got = f"{tuple(conf.shape)} and {tuple(candidates.shape)}"
        raise ValueError(f"conf and candidates must both be [B, W]; got {got}")
    if candidates.dtype != torch.bool:
        raise ValueError(f"candidates must be bool; got {candidates.dtype}")


def threshold_commit_torch(conf: torch.Tensor, candidates: torch.Tensor, threshold: float) -> torch.Tensor:
    """Reference Fast-dLLM rule; the forced pick is the first candidate holding the row's best confidence."""
    _check_commit(conf, candidates)
    commit = candidates & (conf >= threshold)
    if conf.shape[1] == 0:
        return commit
    best_val = conf.masked_fill(~candidates, float("-inf")).amax(dim=-1, keepdim=True)
    # argmax over a bool->int tensor returns the first True: robust even when candidates hold -inf.
    best = (candidates & (conf == best_val)).to(torch.uint8).argmax(dim=-1, keepdim=True)
    has_any = candidates.any(dim=-1, keepdim=True)
    forced = torch.zeros_like(commit).scatter_(-1, best, has_any)
    return commit | forced


if triton_available():

    @triton.jit
    def _top2_reduce(v1, i1, v2, i2, s):
        """Merge per-lane (best, idx, second, idx, sum-of-exp relative to best) into one row result."""
        b1 = tl.max(v1, axis=0)
        j1 = tl.min(tl.where(v1 == b1, i1, 2147483647), axis=0)
        # Runner-up: every lane's best except the winner's lane, which offers its own second best.
        winner = i1 == j1
        cv = tl.where(winner, v2, v1)
        ci = tl.where(winner, i2, i1)
        b2 = tl.max(cv, axis=0)
        j2 = tl.min(tl.where(cv == b2, ci, 2147483647), axis=0)
        b1_ref = tl.where(b1 == float("-inf"), 0.0, b1)
        total = tl.sum(s * tl.exp(v1 - b1_ref), axis=0)
        return b1, j1, b2, j2, total

    @triton.jit
    def _top2_kernel(
        X, P1, I1, P2, I2, PARTF, PARTI,
        W, V, chunk, n_splits,
        sxb, sxw, sxv,
        FINAL: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        row = tl.program_id(0)
        split = tl.program_id(1)
        base = X + (row // W).to(tl.int64) * sxb + (row % W).to(tl.int64) * sxw
        offs = tl.arange(0, BLOCK_V)
        lo = split * chunk
        hi = tl.minimum(lo + chunk, V)

        v1 = tl.full([BLOCK_V], float("-inf"), tl.float32)
        v2 = tl.full([BLOCK_V], float("-inf"), tl.float32)
        i1 = tl.full([BLOCK_V], 2147483647, tl.int32)
        i2 = tl.full([BLOCK_V], 2147483647, tl.int32)
        s = tl.zeros([BLOCK_V], tl.float32)
        for start in range(lo, hi, BLOCK_V):
            idx = start + offs
            x = tl.load(base + idx.to(tl.int64) * sxv, mask=idx < hi, other=float("-inf")).to(tl.float32)
            # Indices grow along a lane, so strict '>' keeps the first index on ties.
            new1 = x > v1
            new2 = (~new1) & (x > v2)
            v2 = tl.where(new1, v1, tl.where(new2, x, v2))
            i2 = tl.where(new1, i1, tl.where(new2, idx, i2))
            m = tl.where(new1, x, v1)
            m_ref = tl.where(m == float("-inf"), 0.0, m)
            s = s * tl.exp(v1 - m_ref) + tl.exp(x - m_ref)
            v1 = m
            i1 = tl.where(new1, idx, i1)

        b1, j1, b2, j2, total = _top2_reduce(v1, i1, v2, i2, s)
        if FINAL:
            tl.store(P1 + row, 1.0 / total)
            tl.store(P2 + row, tl.exp(b2 - b1) / total)
            tl.store(I1 + row, j1.to(tl.int64))
            tl.store(I2 + row, j2.to(tl.int64))
        else:
            slot = (row * n_splits + split).to(tl.int64)
            tl.store(PARTF + slot * 3, b1)
            tl.store(PARTF + slot * 3 + 1, b2)
            tl.store(PARTF + slot * 3 + 2, total)
            tl.store(PARTI + slot * 2, j1)
            tl.store(PARTI + slot * 2 + 1, j2)

    @triton.jit
    def _top2_combine_kernel(PARTF, PARTI, P1, I1, P2, I2, n_splits, BLOCK_S: tl.constexpr):
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK_S)
        ok = offs < n_splits
        slot = (row * n_splits + offs).to(tl.int64)
        v1 = tl.load(PARTF + slot * 3, mask=ok, other=float("-inf"))
        v2 = tl.load(PARTF + slot * 3 + 1, mask=ok, other=float("-inf"))
        s = tl.load(PARTF + slot * 3 + 2, mask=ok, other=0.0)
        i1 = tl.load(PARTI + slot * 2, mask=ok, other=2147483647)
        i2 = tl.load(PARTI + slot * 2 + 1, mask=ok, other=2147483647)
        b1, j1, b2, j2, total = _top2_reduce(v1, i1, v2, i2, s)
        tl.store(P1 + row, 1.0 / total)
        tl.store(P2 + row, tl.exp(b2 - b1) / total)
        tl.store(I1 + row, j1.to(tl.int64))
        tl.store(I2 + row, j2.to(tl.int64))

    @triton.jit
    def _commit_kernel(
        CONF, CAND, OUT, W, threshold,
        scb, scw, sab, saw, sob, sow,
        BLOCK_W: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK_W)
        best_v = tl.full([BLOCK_W], float("-inf"), tl.float32)
        best_i = tl.full([BLOCK_W], 2147483647, tl.int32)
        has = tl.zeros([BLOCK_W], tl.int32) != 0
        for start in range(0, W, BLOCK_W):
            idx = start + offs
            ok = idx < W
            c = tl.load(CONF + row * scb + idx * scw, mask=ok, other=float("-inf"))
            a = tl.load(CAND + row * sab + idx * saw, mask=ok, other=0) != 0
            # First candidate per lane wins even at -inf; later ones need a strictly larger confidence.
            take = a & ((~has) | (c > best_v))
            best_v = tl.where(take, c, best_v)
            best_i = tl.where(take, idx, best_i)
            has = has | a
        row_best = tl.max(tl.where(has, best_v, float("-inf")), axis=0)
        best = tl.min(tl.where(has & (best_v == row_best), best_i, 2147483647), axis=0)
        for start in range(0, W, BLOCK_W):
            idx = start + offs
            ok = idx < W
            c = tl.load(CONF + row * scb + idx * scw, mask=ok, other=float("-inf"))
            a = tl.load(CAND + row * sab + idx * saw, mask=ok, other=0) != 0
            commit = a & ((c >= threshold) | (idx == best))
            tl.store(OUT + row * sob + idx * sow, commit.to(tl.uint8), mask=ok)


_BLOCK_V = 2048


def _top2_launch(x: torch.Tensor, w: int, strides: tuple[int, int, int], n_splits: int | None):
    """Run the top-2 kernel on the rows of ``x``; row r lives at (r // w, r % w) under ``strides`` (b, w, v)."""
    n = x.numel() // x.shape[-1]
    v = x.shape[-1]
    dev = x.device
    p1 = torch.empty(n, device=dev, dtype=torch.float32)
    p2 = torch.empty(n, device=dev, dtype=torch.float32)
    i1 = torch.empty(n, device=dev, dtype=torch.int64)
    i2 = torch.empty(n, device=dev, dtype=torch.int64)
    if n == 0:
        return p1, i1, p2, i2
    n_tiles = triton.cdiv(v, _BLOCK_V)
    if n_splits is None:
        # Split the vocabulary only when rows alone give fewer than ~4 programs per SM.
        n_splits = triton.cdiv(4 * device_parallelism(x), n)
    n_splits = max(1, min(int(n_splits), n_tiles))
    chunk = triton.cdiv(n_tiles, n_splits) * _BLOCK_V
    n_splits = triton.cdiv(v, chunk)
    final = n_splits == 1
    partf = p1 if final else torch.empty((n * n_splits * 3,), device=dev, dtype=torch.float32)
    parti = i1 if final else torch.empty((n * n_splits * 2,), device=dev, dtype=torch.int32)
    _top2_kernel[(n, n_splits)](
        x, p1, i1, p2, i2, partf, parti,
        w, v, chunk, n_splits,
        *strides,
        FINAL=final, BLOCK_V=_BLOCK_V, num_warps=4,
    )
    if not final:
        _top2_combine_kernel[(n,)](
            partf, parti, p1, i1, p2, i2, n_splits,
            BLOCK_S=max(16, triton.next_power_of_2(n_splits)), num_warps=1,
        )
    return p1, i1, p2, i2


def top2_confidence_triton(
    logits: torch.Tensor, num_splits: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton path; ``num_splits`` forces the vocabulary split (default: enough programs to fill the device)."""
    _check_logits(logits)
    return _top2_launch(logits, 1, (logits.stride(0), 0, logits.stride(1)), num_splits)


def top2_confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(p1, idx1, p2, idx2)`` of ``softmax(logits.float())`` per row: fp32 probabilities, int64 tokens."""
    if use_triton(logits):
        return top2_confidence_triton(logits)
    return top2_confidence_torch(logits)


def threshold_commit_triton(conf: torch.Tensor, candidates: torch.Tensor, threshold: float) -> torch.Tensor:
    """Triton path: one program per row, two passes over W (find the forced pick, then write)."""
    _check_commit(conf, candidates)
    bsz, w = conf.shape
    out = torch.empty((bsz, w), device=conf.device, dtype=torch.bool)
    if bsz == 0 or w == 0:
        return out
    cand = candidates.view(torch.uint8)
    _commit_kernel[(bsz,)](
        conf, cand, out.view(torch.uint8), w, float(threshold),
        *conf.stride(), *cand.stride(), *out.stride(),
        BLOCK_W=min(1024, max(16, triton.next_power_of_2(w))), num_warps=1 if w <= 256 else 4,
    )
    return out


def threshold_commit(conf: torch.Tensor, candidates: torch.Tensor, threshold: float) -> torch.Tensor:
    """``candidates & (conf >= threshold)`` plus the most confident candidate of every non-empty row."""
    if use_triton(conf, candidates) and conf.dtype == torch.float32:
        return threshold_commit_triton(conf, candidates, threshold)
    return threshold_commit_torch(conf, candidates, threshold)


def fused_threshold_step(
    logits: torch.Tensor, candidates: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One threshold-decoding step on a block: ``(tokens [B, W] int64, conf [B, W] fp32, commit [B, W] bool)``.

    ``tokens``/``conf`` are the argmax token and its probability at every position (candidate or not);
    ``commit`` applies ``threshold_commit`` to them. ``logits`` may be a strided slice of the model output
    (e.g. ``logits[:, s:e]``): the Triton path reads it in place instead of copying.
    """
    if logits.dim() != 3 or tuple(candidates.shape) != tuple(logits.shape[:2]):
        got = f"{tuple(logits.shape)} and {tuple(candidates.shape)}"
        raise ValueError(f"want logits [B, W, V] and candidates [B, W]; got {got}")
    bsz, w, v = logits.shape
    if v == 0 or not logits.is_floating_point():
        raise ValueError(f"logits must be floating point with V > 0; got {logits.dtype} V={v}")
    if use_triton(logits, candidates):
        p1, i1, _, _ = _top2_launch(logits, w, tuple(logits.stride()), None)
        conf, tokens = p1.view(bsz, w), i1.view(bsz, w)
        return tokens, conf, threshold_commit_triton(conf, candidates, threshold)
    p1, i1, _, _ = top2_confidence_torch(logits.reshape(bsz * w, -1))
    conf, tokens = p1.view(bsz, w), i1.view(bsz, w)
    return tokens, conf, threshold_commit_torch(conf, candidates, threshold)
