"""Kernels of dllm.kernels: references against naive code, Triton (CPU interpreter) against references.

TRITON_INTERPRET must be set before the kernel modules are imported: Triton decides at ``@triton.jit``
decoration time whether a kernel is compiled or interpreted.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported

import importlib  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from dllm.errors import DllmError  # noqa: E402


def _import_kernels():
    """Import the kernels interpreted, re-importing them if an earlier test module imported them compiled."""
    loaded = sys.modules.get("dllm.kernels")
    if loaded is not None and loaded.triton_available() and not loaded.TRITON_INTERPRETED:
        for name in [n for n in sys.modules if n == "dllm.kernels" or n.startswith("dllm.kernels.")]:
            del sys.modules[name]
    return importlib.import_module("dllm.kernels")


K = _import_kernels()
D = importlib.import_module("dllm.kernels.dispatch")
attn_mod = importlib.import_module("dllm.kernels.attention")
conf_mod = importlib.import_module("dllm.kernels.confidence")
scat_mod = importlib.import_module("dllm.kernels.scatter")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Attention output vs an fp32 reference on the same (rounded) inputs: fp32 is exact up to summation order;
# half types round P before P @ V and the output itself.
ATTN_TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.fixture
def triton_kernels():
    """Skip cleanly when triton is absent; otherwise the kernels run under the CPU interpreter."""
    pytest.importorskip("triton")
    assert K.TRITON_INTERPRETED, "kernels were built compiled although TRITON_INTERPRET=1 was set first"
    return K


@pytest.fixture(autouse=True)
def _default_mode(monkeypatch):
    monkeypatch.delenv("DLLM_KERNELS", raising=False)


# ----------------------------------------------------------------------------------------------- helpers


def _attn_inputs(b, hq, hkv, tq, tk, d, dtype, pad=None, seed=0, q_transposed=False):
    g = torch.Generator().manual_seed(seed)
    if q_transposed:  # [B, Tq, Hq, D] memory viewed as [B, Hq, Tq, D], as after a projection + transpose
        q = torch.randn(b, tq, hq, d, generator=g).to(dtype).transpose(1, 2)
    else:
        q = torch.randn(b, hq, tq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, tk, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, tk, d, generator=g).to(dtype)
    mask = None
    if pad is not None:  # left padding: row i ignores its first pad[i] keys
        mask = torch.ones(b, tk, dtype=torch.bool)
        for i, p in enumerate(pad):
            mask[i, :p] = False
    return q, k, v, mask


def _naive_attention(q, k, v, mask=None, scale=None):
    """softmax(q k^T * scale) v with explicit loops over batch and head, in float64."""
    b, hq, tq, d = q.shape
    hkv = k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = torch.empty(b, hq, tq, d, dtype=torch.float64)
    for i in range(b):
        for h in range(hq):
            kv = h // (hq // hkv)
            s = (q[i, h].double() @ k[i, kv].double().T) * scale
            if mask is not None:
                s[:, ~mask[i]] = float("-inf")
            p = torch.exp(s - s.max(dim=-1, keepdim=True).values)
            p = p / p.sum(dim=-1, keepdim=True)
            out[i, h] = p @ v[i, kv].double()
    return out


def _naive_top2(logits):
    """Full softmax, then a stable descending sort: equal values keep index order, so ties pick first."""
    p = torch.softmax(logits.double(), dim=-1)
    order = torch.sort(logits.double(), dim=-1, descending=True, stable=True).indices
    i1, i2 = order[:, 0], order[:, 1]
    return p.gather(-1, i1[:, None])[:, 0], i1, p.gather(-1, i2[:, None])[:, 0], i2


def _naive_commit(conf, cand, threshold):
    out = torch.zeros_like(cand)
    for r in range(conf.shape[0]):
        best = None
        for j in range(conf.shape[1]):
            if cand[r, j]:
                if conf[r, j] >= threshold:
                    out[r, j] = True
                if best is None or conf[r, j] > conf[r, best]:
                    best = j
        if best is not None:
            out[r, best] = True
    return out


def _tied_logits(n, v, dtype, seed=0):
    """Random logits with planted exact ties: equal maxima, and an equal runner-up pair behind a max."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, v, generator=g) * 3
    if n > 0:
        x[0, [v // 3, v - 1]] = 20.0  # tied maximum, far apart (different tiles / splits)
    if n > 1:
        x[1, 7] = 25.0
        x[1, [3, v - 2]] = 21.0  # tied runner-up on both sides of the maximum
    if n > 2:
        x[2, :] = 0.5  # all equal: idx1 = 0, idx2 = 1
    if n > 3:
        x[3, ::2] = float("-inf")  # suppressed tokens
    return x.to(dtype)


# ------------------------------------------------------------------------------- references vs naive


@pytest.mark.parametrize(
    "b,hq,hkv,tq,tk,d,pad,scale",
    [
        (1, 2, 2, 3, 10, 16, None, None),
        (2, 4, 2, 5, 17, 32, [0, 6], None),
        (2, 4, 1, 1, 9, 16, [3, 0], 0.3),
    ],
)
def test_attention_torch_matches_naive(b, hq, hkv, tq, tk, d, pad, scale):
    q, k, v, mask = _attn_inputs(b, hq, hkv, tq, tk, d, torch.float32, pad)
    out = K.attention_torch(q, k, v, mask, scale)
    assert out.shape == (b, hq, tq, d) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), _naive_attention(q, k, v, mask, scale), atol=1e-5, rtol=1e-5)


def test_attention_torch_all_masked_row_stays_local():
    # What a fully masked row gets is backend-dependent (NaN or 0); it must not leak into other rows.
    q, k, v, mask = _attn_inputs(2, 2, 2, 2, 6, 16, torch.float32, pad=[0, 6])
    out = K.attention_torch(q, k, v, mask)
    torch.testing.assert_close(out[:1].double(), _naive_attention(q[:1], k[:1], v[:1]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n,v", [(4, 50), (5, 3000)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_top2_torch_matches_naive(n, v, dtype):
    x = _tied_logits(n, v, dtype)
    p1, i1, p2, i2 = K.top2_confidence_torch(x)
    e1, j1, e2, j2 = _naive_top2(x)
    assert p1.dtype == p2.dtype == torch.float32 and i1.dtype == i2.dtype == torch.int64
    assert torch.equal(i1, j1) and torch.equal(i2, j2)
    torch.testing.assert_close(p1.double(), e1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(p2.double(), e2, atol=1e-6, rtol=1e-5)


def test_top2_torch_tie_semantics():
    p1, i1, p2, i2 = K.top2_confidence_torch(_tied_logits(3, 40, torch.float32))
    assert (i1[0].item(), i2[0].item()) == (13, 39) and p1[0] == p2[0]
    assert (i1[1].item(), i2[1].item()) == (7, 3)
    assert (i1[2].item(), i2[2].item()) == (0, 1)
    torch.testing.assert_close(p1[2], torch.tensor(1 / 40))


def _commit_inputs(b, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(b, w, generator=g)
    cand = torch.rand(b, w, generator=g) < 0.6
    cand[0] = False  # a row with no candidates commits nothing
    if b > 1:
        conf[1, :] = 0.25  # all tied below the threshold: the first candidate is forced
    if b > 2:
        conf[2, 1] = conf[2, w - 1] = 0.95
        cand[2, 1] = cand[2, w - 1] = True
    if b > 3:
        conf[3, 0] = 0.9  # exactly at the threshold counts as confident
        cand[3, 0] = True
    return conf, cand


@pytest.mark.parametrize("b,w", [(4, 8), (5, 33)])
def test_threshold_commit_torch_matches_naive(b, w):
    conf, cand = _commit_inputs(b, w)
    out = K.threshold_commit_torch(conf, cand, 0.9)
    assert torch.equal(out, _naive_commit(conf, cand, 0.9))
    assert not out[0].any() and out[1].sum() == 1 and (out & ~cand).sum() == 0


def test_threshold_commit_torch_minus_inf_candidates():
    conf = torch.tensor([[0.5, float("-inf"), float("-inf")]])
    cand = torch.tensor([[False, True, True]])
    assert K.threshold_commit_torch(conf, cand, 0.9).tolist() == [[False, True, False]]


def _naive_scatter(cache, fresh, positions):
    out = cache.clone()
    for b in range(positions.shape[0]):
        for j in range(positions.shape[1]):
            p = int(positions[b, j])
            if p >= 0:
                out[b, :, p] = fresh[b, :, j]
    return out


def _scatter_inputs(b, h, tc, tn, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    cache = torch.randn(b, h, tc, d, generator=g).to(dtype)
    fresh = torch.randn(b, h, tn, d, generator=g).to(dtype)
    positions = torch.stack([torch.randperm(tc, generator=g)[:tn] for _ in range(b)])
    positions[0, 1] = -1
    if b > 1:
        positions[1, :] = -3  # a fully skipped row
    return cache, fresh, positions


def test_scatter_torch_matches_naive():
    cache, fresh, positions = _scatter_inputs(3, 2, 12, 4, 8, torch.float32)
    expected = _naive_scatter(cache, fresh, positions)
    K.scatter_kv_torch(cache, fresh, positions)
    assert torch.equal(cache, expected)


def test_scatter_torch_out_of_range_raises():
    cache, fresh, positions = _scatter_inputs(1, 2, 6, 2, 4, torch.float32)
    positions[0, 0] = 6
    with pytest.raises(IndexError):
        K.scatter_kv_torch(cache, fresh, positions)


# ------------------------------------------------------------------------------ dispatch and selection


def test_interpreter_is_honoured(triton_kernels):
    kernels = [attn_mod._attn_fwd_kernel, conf_mod._top2_kernel, conf_mod._commit_kernel, scat_mod._scatter_kernel]
    assert all(type(kern).__name__ == "InterpretedFunction" for kern in kernels)


def test_bad_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DLLM_KERNELS", "cuda")
    with pytest.raises(DllmError, match="DLLM_KERNELS"):
        K.kernel_mode()
    x = torch.zeros(2, 5)
    with pytest.raises(DllmError):
        K.top2_confidence(x)


def test_auto_and_torch_use_the_reference_on_cpu(monkeypatch):
    x = torch.zeros(1, 4)
    assert K.kernel_mode() == "auto" and not K.use_triton(x)
    monkeypatch.setenv("DLLM_KERNELS", "torch")
    assert not K.use_triton(x)


def test_forced_triton_on_cpu_needs_the_interpreter(monkeypatch, triton_kernels):
    monkeypatch.setenv("DLLM_KERNELS", "triton")
    assert K.use_triton(torch.zeros(1))
    monkeypatch.setattr(D, "TRITON_INTERPRETED", False)
    with pytest.raises(DllmError, match="TRITON_INTERPRET"):
        K.use_triton(torch.zeros(1))


def test_forced_triton_without_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DLLM_KERNELS", "triton")
    monkeypatch.setattr(D, "triton_available", lambda: False)
    with pytest.raises(DllmError, match="triton does not import"):
        K.use_triton(torch.zeros(1))


def _spy(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_dispatchers_route_by_mode(monkeypatch, triton_kernels):
    q, k, v, mask = _attn_inputs(1, 2, 2, 2, 20, 16, torch.float32, pad=[3])
    logits = _tied_logits(3, 300, torch.float32)
    conf, cand = _commit_inputs(4, 8)
    cache, fresh, positions = _scatter_inputs(2, 2, 10, 3, 16, torch.float32)
    spies = {
        "attention_triton": _spy(monkeypatch, attn_mod, "attention_triton"),
        "top2_confidence_triton": _spy(monkeypatch, conf_mod, "top2_confidence_triton"),
        "threshold_commit_triton": _spy(monkeypatch, conf_mod, "threshold_commit_triton"),
        "scatter_kv_triton": _spy(monkeypatch, scat_mod, "scatter_kv_triton"),
    }

    def run_all():
        c = cache.clone()
        K.scatter_kv(c, fresh, positions)
        return K.attention(q, k, v, mask), K.top2_confidence(logits), K.threshold_commit(conf, cand, 0.9), c

    ref = run_all()
    assert not any(spies.values())  # auto on CPU: PyTorch
    monkeypatch.setenv("DLLM_KERNELS", "triton")
    got = run_all()
    assert all(len(calls) == 1 for calls in spies.values())
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(got[1][1], ref[1][1]) and torch.equal(got[2], ref[2]) and torch.equal(got[3], ref[3])


def test_attention_with_autograd_takes_the_differentiable_path(monkeypatch, triton_kernels):
    """Training through the model's attention must get real gradients even where Triton would run."""
    q, k, v, mask = _attn_inputs(2, 4, 2, 5, 11, 16, torch.float32, pad=[3])
    spy = _spy(monkeypatch, attn_mod, "attention_triton")
    monkeypatch.setenv("DLLM_KERNELS", "triton")

    def grads(fn):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = fn(*leaves, mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), [t.grad for t in leaves]

    got_out, got_grads = grads(K.attention)
    ref_out, ref_grads = grads(K.attention_torch)
    assert not spy, "the kernel (no backward) ran on tensors that need gradients"
    torch.testing.assert_close(got_out, ref_out)
    for got, ref in zip(got_grads, ref_grads, strict=True):
        assert got is not None and got.abs().sum() > 0
        torch.testing.assert_close(got, ref)
    with torch.no_grad():  # inference keeps the kernel
        K.attention(q, k, v, mask)
    assert len(spy) == 1


def test_attention_unsupported_head_dim_falls_back(monkeypatch, triton_kernels):
    q, k, v, _ = _attn_inputs(1, 2, 1, 2, 9, 24, torch.float32)
    with pytest.raises(ValueError, match="head dim 24"):
        K.attention_triton(q, k, v)
    monkeypatch.setenv("DLLM_KERNELS", "triton")
    with pytest.warns(RuntimeWarning, match="falls back"):
        out = K.attention(q, k, v)
    torch.testing.assert_close(out, K.attention_torch(q, k, v))


def test_shape_errors():
    q, k, v, _ = _attn_inputs(1, 3, 2, 2, 9, 16, torch.float32)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        K.attention(q, k, v)
    with pytest.raises(ValueError, match="positions must be int64"):
        K.scatter_kv(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="candidates must be bool"):
        K.threshold_commit(torch.zeros(1, 2), torch.zeros(1, 2), 0.5)


# --------------------------------------------------------------------------------- Triton vs reference

ATTN_CASES = [
    # b, hq, hkv, tq, tk, d, left padding, num_splits
    (1, 2, 2, 1, 7, 16, None, 1),  # single query, fewer keys than one tile
    (2, 4, 2, 5, 77, 32, [0, 10], 1),  # GQA 2:1, ragged Tk, left padding
    (2, 4, 1, 3, 130, 16, [5, 70], 3),  # GQA 4:1 (MQA), split keys, padding spans a whole tile
    (1, 4, 4, 16, 100, 64, [33], None),  # heuristic splits
    (1, 8, 2, 9, 65, 32, None, 2),  # 4x9 = 36 packed rows: BLOCK_M 64 with masked rows, Tk = tile + 1
]


@pytest.mark.parametrize("case", ATTN_CASES, ids=lambda c: "b{}h{}kv{}q{}k{}d{}".format(*c[:6]))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_triton_matches_reference(triton_kernels, case, dtype):
    b, hq, hkv, tq, tk, d, pad, splits = case
    q, k, v, mask = _attn_inputs(b, hq, hkv, tq, tk, d, dtype, pad, seed=tk)
    out = K.attention_triton(q, k, v, mask, num_splits=splits)
    ref = K.attention_torch(q.float(), k.float(), v.float(), mask)
    assert out.shape == (b, hq, tq, d) and out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=ATTN_TOL[dtype], rtol=ATTN_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_triton_strided_inputs_and_scale(triton_kernels, dtype):
    q, k, v, mask = _attn_inputs(2, 4, 2, 4, 40, 32, dtype, pad=[2, 9], q_transposed=True)
    k_big = torch.randn(2, 2, 64, 32).to(dtype)
    k_big[:, :, :40] = k
    k_view = k_big[:, :, :40]  # a cache slice: non-contiguous along the batch/head strides
    mask_view = torch.ones(2, 50, dtype=torch.bool)[:, :40] & mask
    out = K.attention_triton(q, k_view, v, mask_view, scale=0.2, num_splits=2)
    ref = K.attention_torch(q.float(), k.float(), v.float(), mask, scale=0.2)
    torch.testing.assert_close(out.float(), ref, atol=ATTN_TOL[dtype], rtol=ATTN_TOL[dtype])


@pytest.mark.parametrize("d", [128, 256])
def test_attention_triton_large_head_dims(triton_kernels, d):
    q, k, v, mask = _attn_inputs(1, 2, 1, 2, 40, d, torch.float16, pad=[5])
    out = K.attention_triton(q, k, v, mask, num_splits=2)
    ref = K.attention_torch(q.float(), k.float(), v.float(), mask)
    torch.testing.assert_close(out.float(), ref, atol=ATTN_TOL[torch.float16], rtol=ATTN_TOL[torch.float16])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_triton_llada_like_slow(triton_kernels, dtype):
    q, k, v, mask = _attn_inputs(2, 8, 8, 32, 700, 128, dtype, pad=[0, 300])
    out = K.attention_triton(q, k, v, mask)
    ref = K.attention_torch(q.float(), k.float(), v.float(), mask)
    torch.testing.assert_close(out.float(), ref, atol=ATTN_TOL[dtype], rtol=ATTN_TOL[dtype])


def _check_top2(got, ref):
    p1, i1, p2, i2 = got
    r1, j1, r2, j2 = ref
    assert p1.dtype == p2.dtype == torch.float32 and i1.dtype == i2.dtype == torch.int64
    assert torch.equal(i1, j1) and torch.equal(i2, j2)
    torch.testing.assert_close(p1, r1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(p2, r2, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("n,v,splits", [(5, 1000, 1), (4, 5000, 3), (6, 4097, None), (1, 2, 1)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_top2_triton_matches_reference(triton_kernels, n, v, splits, dtype):
    x = _tied_logits(n, v, dtype, seed=v)
    _check_top2(K.top2_confidence_triton(x, num_splits=splits), K.top2_confidence_torch(x))


def test_top2_triton_ties_across_lanes_and_splits(triton_kernels):
    # Equal maxima in the same lane (index i and i + 2048), in different splits, and a runner-up tie.
    x = torch.randn(3, 6000) * 0.1
    x[0, [5, 5 + 2048]] = 4.0
    x[1, [4500, 100]] = 4.0
    x[2, 3000] = 5.0
    x[2, [5999, 2, 2050]] = 4.0
    ref = K.top2_confidence_torch(x)
    assert ref[1].tolist() == [5, 100, 3000] and ref[3].tolist() == [2053, 4500, 2]
    for splits in (1, 2, 3):
        _check_top2(K.top2_confidence_triton(x, num_splits=splits), ref)


@pytest.mark.parametrize("b,w", [(4, 8), (6, 37), (2, 1500)])
def test_threshold_commit_triton_matches_reference(triton_kernels, b, w):
    conf, cand = _commit_inputs(b, w, seed=w)
    for threshold in (0.0, 0.5, 0.9, 1.1):
        got = K.threshold_commit_triton(conf, cand, threshold)
        assert got.dtype == torch.bool
        assert torch.equal(got, K.threshold_commit_torch(conf, cand, threshold))
    # Strided inputs: columns of a wider buffer.
    wide_conf = torch.rand(b, w + 3)
    wide_conf[:, :w] = conf
    assert torch.equal(
        K.threshold_commit_triton(wide_conf[:, :w], cand, 0.5), K.threshold_commit_torch(conf, cand, 0.5)
    )


def test_threshold_commit_triton_minus_inf_candidates(triton_kernels):
    conf = torch.tensor([[0.5, float("-inf"), float("-inf")], [float("-inf")] * 3])
    cand = torch.tensor([[False, True, True], [False, False, True]])
    assert torch.equal(K.threshold_commit_triton(conf, cand, 0.9), K.threshold_commit_torch(conf, cand, 0.9))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_threshold_step_matches_reference(monkeypatch, triton_kernels, dtype):
    g = torch.Generator().manual_seed(1)
    full = (torch.randn(2, 12, 3001, generator=g) * 4).to(dtype)
    logits = full[:, 3:9]  # the active block's slice of the model output: strided, not copied
    cand = torch.rand(2, 6, generator=g) < 0.7
    cand[1] = False
    ref = K.fused_threshold_step(logits, cand, 0.3)
    flat = K.top2_confidence_torch(logits.reshape(12, -1))
    assert torch.equal(ref[0], flat[1].view(2, 6)) and torch.equal(ref[1], flat[0].view(2, 6))
    assert torch.equal(ref[2], K.threshold_commit_torch(ref[1], cand, 0.3)) and not ref[2][1].any()
    monkeypatch.setenv("DLLM_KERNELS", "triton")
    tokens, conf, commit = K.fused_threshold_step(logits, cand, 0.3)
    assert tokens.dtype == torch.int64 and conf.dtype == torch.float32 and commit.dtype == torch.bool
    assert torch.equal(tokens, ref[0]) and torch.equal(commit, ref[2])
    torch.testing.assert_close(conf, ref[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "b,h,tc,tn,d",
    [(3, 2, 12, 4, 16), (2, 5, 9, 3, 24), (2, 6, 7, 2, 1024)],  # D=24: masked lanes; D=1024: 2 head tiles
)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scatter_triton_matches_reference(triton_kernels, b, h, tc, tn, d, dtype):
    cache, fresh, positions = _scatter_inputs(b, h, tc, tn, d, dtype, seed=d)
    expected = cache.clone()
    K.scatter_kv_torch(expected, fresh, positions)
    K.scatter_kv_triton(cache, fresh, positions)
    assert torch.equal(cache, expected)


def test_scatter_triton_strided_cache_and_cast(triton_kernels):
    # Cache stored [B, T, H, D] and viewed [B, H, T, D]; fresh in fp32 is cast to the cache's bf16.
    store = torch.zeros(2, 10, 3, 16, dtype=torch.bfloat16)
    cache = store.transpose(1, 2)
    fresh = torch.randn(2, 3, 4, 16)
    positions = torch.tensor([[9, 0, -1, 4], [-1, -1, 2, 3]])
    expected = cache.clone()
    K.scatter_kv_torch(expected, fresh, positions)
    K.scatter_kv_triton(cache, fresh, positions)
    assert torch.equal(cache, expected) and store.abs().sum() > 0


def test_scatter_triton_drops_out_of_range(triton_kernels):
    cache, fresh, positions = _scatter_inputs(1, 2, 6, 2, 4, torch.float32)
    positions[0] = torch.tensor([6, 2])
    before = cache.clone()
    K.scatter_kv_triton(cache, fresh, positions)
    assert torch.equal(cache[:, :, 2], fresh[:, :, 1])
    keep = [0, 1, 3, 4, 5]
    assert torch.equal(cache[:, :, keep], before[:, :, keep])


def test_no_warnings_from_kernels(triton_kernels):
    q, k, v, mask = _attn_inputs(1, 4, 2, 3, 50, 16, torch.float32, pad=[10])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K.attention_triton(q, k, v, mask, num_splits=2)
        K.attention_triton(q, k, v, mask, num_splits=1)


@pytest.mark.parametrize("b, hkv, tk, want", [
    (1, 32, 512, True), (1, 32, 2048, True), (1, 4, 2048, True),  # measured wins on the H200 (README)
    (8, 32, 1024, False),  # measured tie: PyTorch
    (1, 32, 256, False), (16, 32, 2048, False),  # below the smallest measured win / more pairs than the tie
])
def test_auto_mode_picks_triton_attention_by_the_measured_shape_rule(monkeypatch, b, hkv, tk, want):
    q, k, v = (torch.zeros(b, hkv, n, 8) for n in (2, tk, tk))
    chosen = []
    monkeypatch.setattr(attn_mod, "use_triton", lambda *t: True)  # as on a CUDA machine with triton
    monkeypatch.setattr(attn_mod, "_triton_unsupported", lambda *t: None)
    monkeypatch.setattr(attn_mod, "attention_triton", lambda *a, **kw: chosen.append("triton") or attn_mod.attention_torch(*a, **kw))
    K.attention(q, k, v)
    assert attn_mod.triton_attention_pays(q, k) is want and bool(chosen) is want
    monkeypatch.setenv("DLLM_KERNELS", "triton")  # forcing the kernel ignores the rule
    chosen.clear()
    K.attention(q, k, v)
    assert chosen == ["triton"]
