"""KV-cache managers (prefix, dual, delayed): exactness against the no-cache path, the stale-K/V semantics
of each cache against an independent reference, batching, NFE conventions and option errors."""

from __future__ import annotations

import pytest
import torch

import dllm
from dllm.cache import CACHES as CACHES_REGISTRY
from dllm.cache import caches, make_cache
from dllm.engine import build_canvas
from dllm.errors import DllmError
from dllm.models.tiny import make_tiny_model

CACHES = ("prefix", "dual", "delayed")
PROMPTS = [[7, 8, 9, 10, 11], [12, 13], [20, 21, 22, 23, 24, 25, 26, 27]]
GEN, BLOCK = 16, 4


def _model(kind: str, kv_heads: int = 2, peaky: float = 1.0):
    m = make_tiny_model(kind, vocab_size=64, hidden=32, layers=2, heads=4, kv_heads=kv_heads, intermediate=64,
                        dtype=torch.float64)
    if peaky != 1.0:  # sharpen the random model's predictions so threshold decoding commits several per step
        with torch.no_grad():
            list(m.parameters())[-1].mul_(peaky)
    return m


@pytest.fixture(scope="module", params=["llada", "dream"])
def model(request):
    return _model(request.param, peaky=40.0)


def _gen(m, prompts, cache, policy="lowconf", **opts):
    return dllm.generate(m, prompts, policy=policy, gen_length=GEN, block_length=BLOCK, steps=GEN, cache=cache,
                         stop_at_eos=False, **opts)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls: one thread is fastest and immune to oversubscription on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


POLICIES = [("lowconf", {}), ("threshold", {"threshold": 0.7})]


# --- (a) refresh=1 is the no-cache path ------------------------------------------------------------------
@pytest.mark.parametrize("kind,kv_heads", [("llada", 4), ("llada", 2), ("dream", 2), ("dream", 1)])
@pytest.mark.parametrize("policy,opts", POLICIES)
def test_refresh_1_equals_no_cache(kind, kv_heads, policy, opts):
    m = _model(kind, kv_heads=kv_heads, peaky=40.0)
    ref = _gen(m, PROMPTS, "none", policy, **opts)
    for cache in CACHES:
        out = _gen(m, PROMPTS, cache, policy, refresh=1, **opts)
        assert torch.equal(out.tokens, ref.tokens), cache
        assert out.seq_nfe == ref.seq_nfe and out.nfe == ref.nfe, cache


@pytest.mark.parametrize("cache", CACHES)
def test_vicinity_covering_everything_equals_no_cache(model, cache):
    """A vicinity wider than the canvas recomputes every position on every cached step."""
    ref = _gen(model, PROMPTS, "none", "threshold", threshold=0.7)
    out = _gen(model, PROMPTS, cache, "threshold", threshold=0.7, vicinity=64)
    assert torch.equal(out.tokens, ref.tokens)
    assert out.seq_nfe == ref.seq_nfe


# --- (b, c) cached forwards against full forwards and an independent stale-K/V reference ---------------------
def _canvas(m, seed=0):
    canvas, key_mask, positions, gen_start = build_canvas(m, PROMPTS, GEN, torch.device("cpu"))
    g = torch.Generator().manual_seed(seed)
    return canvas, key_mask, positions, gen_start, g


def _fill(canvas, rows_cols, g, m):
    """Commit random tokens at the given (row, col) positions (returns a new canvas)."""
    out = canvas.clone()
    for r, c in rows_cols:
        out[r, c] = int(torch.randint(8, m.vocab_size, (1,), generator=g))
    return out


def _full_logits(m, canvas, key_mask, positions, window, hook=None):
    s = 1 if m.logit_shift else 0
    ws, we = window
    return m(canvas, positions, key_mask, hook, logits_index=slice(ws - s, we - s))


def _record(m, canvas, key_mask, positions):
    """Per-layer K/V of a full forward of ``canvas``."""
    ks, vs = [], []

    def hook(layer, k, v):
        ks.append(k.clone())
        vs.append(v.clone())
        return k, v, key_mask

    m(canvas, positions, key_mask, hook, logits_index=slice(0, 1))
    return ks, vs


def _frozen_reference(m, canvas, key_mask, positions, window, stored, frozen):
    """Full forward of ``canvas`` in which the K/V at ``frozen`` [B, L] positions are the ``stored`` ones.

    Returns the window logits and the per-layer K/V the store holds afterwards (stored where frozen, this
    forward's fresh K/V elsewhere)."""
    ks, vs = stored
    new_ks, new_vs = [], []

    def hook(layer, k, v):
        f = frozen[:, None, :, None]
        k2, v2 = torch.where(f, ks[layer], k), torch.where(f, vs[layer], v)
        new_ks.append(k2)
        new_vs.append(v2)
        return k2, v2, key_mask

    return _full_logits(m, canvas, key_mask, positions, window, hook), (new_ks, new_vs)


#: these tests look at the cached step itself: delayed's step-1 full forward (its default, as dKV-Cache) is off
_CACHED_STEP_OPTS = {"delayed": {"step1_full": False}}


def _frozen_set(m, cache, canvas_at_refresh, bs, be, length):
    s = 1 if m.logit_shift else 0
    cols = torch.arange(length)[None, :]
    if cache == "prefix":
        return cols < (bs - s)[:, None]
    if cache == "dual":
        return (cols < (bs - s)[:, None]) | (cols >= be[:, None])
    return canvas_at_refresh != m.mask_id  # delayed: what was decided at the previous forward


@pytest.mark.parametrize("cache", CACHES)
def test_cached_step_on_unchanged_canvas_equals_full_forward(model, cache):
    """(b) prefix after a block finished, (c) dual with unchanged block tokens, and delayed with no commit
    since the refresh: the cached forward reproduces the full forward's logits."""
    m = model
    canvas, key_mask, positions, gs, g = _canvas(m)
    canvas = _fill(canvas, [(r, c) for r in range(3) for c in range(gs, gs + BLOCK)], g, m)  # block 0 finished
    b = canvas.shape[0]
    bs = torch.full((b,), gs + BLOCK)
    be = bs + BLOCK
    window = (gs + BLOCK, gs + 2 * BLOCK)
    mgr = make_cache(cache, m, key_mask, positions, gs, gs + GEN, **_CACHED_STEP_OPTS.get(cache, {}))
    active = torch.ones(b, dtype=torch.bool)
    with torch.inference_mode():
        first = mgr.logits(canvas, active, bs, be, window)  # opens block 1: full forward
        second = mgr.logits(canvas, active, bs, be, window)  # cached forward
        ref = _full_logits(m, canvas, key_mask, positions, window)
    assert mgr.refreshes.tolist() == [1, 1, 1]
    assert mgr.nfe.tolist() == [2, 2, 2] and mgr.calls == 2
    assert (mgr.forwarded < 2 * canvas.shape[1]).all()  # the second step did not forward everything
    torch.testing.assert_close(first, ref, rtol=0, atol=0)
    torch.testing.assert_close(second, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cache", CACHES)
def test_cached_step_uses_exactly_the_stale_kv(model, cache):
    """After commits, a cached step equals a full forward whose K/V outside the fresh set are those of the
    refresh forward. Rows sit in different blocks, and one row opens a new block on the cached step (so the
    same step mixes a full and a cached forward), another is inactive."""
    m = model
    canvas0, key_mask, positions, gs, g = _canvas(m, seed=1)
    b, length = canvas0.shape
    # row 0 in block 0, row 1 in block 1 (block 0 done), row 2 in block 2 (blocks 0-1 done)
    done = [(1, c) for c in range(gs, gs + BLOCK)] + [(2, c) for c in range(gs, gs + 2 * BLOCK)]
    canvas0 = _fill(canvas0, done + [(0, gs + 1)], g, m)
    bs = torch.tensor([gs, gs + BLOCK, gs + 2 * BLOCK])
    be = bs + BLOCK
    window = (gs, gs + 3 * BLOCK)
    active = torch.ones(b, dtype=torch.bool)
    mgr = make_cache(cache, m, key_mask, positions, gs, gs + GEN, **_CACHED_STEP_OPTS.get(cache, {}))
    with torch.inference_mode():
        mgr.logits(canvas0, active, bs, be, window)
        recorded = _record(m, canvas0, key_mask, positions)
        # commit two tokens in each row's block
        canvas1 = _fill(canvas0, [(r, int(bs[r]) + j) for r in range(b) for j in (2, 3)], g, m)
        got = mgr.logits(canvas1, active, bs, be, window)
        ref, stored = _frozen_reference(m, canvas1, key_mask, positions, window, recorded,
                                        _frozen_set(m, cache, canvas0, bs, be, length))
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
        assert not torch.allclose(got, _full_logits(m, canvas1, key_mask, positions, window))  # it is a cache

        # next step: row 0 opens block 1 (full forward), row 1 continues cached, row 2 is inactive
        bs2 = torch.tensor([gs + BLOCK, gs + BLOCK, gs + 2 * BLOCK])
        be2 = bs2 + BLOCK
        canvas2 = _fill(canvas1, [(0, c) for c in range(gs, gs + BLOCK)] + [(1, gs + BLOCK)], g, m)
        active2 = torch.tensor([True, True, False])
        window2 = (gs + BLOCK, gs + 2 * BLOCK)
        before = mgr.nfe.clone()
        got2 = mgr.logits(canvas2, active2, bs2, be2, window2)
        assert (mgr.nfe - before).tolist() == [1, 1, 0] and mgr.refreshes.tolist() == [2, 1, 1]
        torch.testing.assert_close(got2[0], _full_logits(m, canvas2, key_mask, positions, window2)[0], rtol=0, atol=0)
        ref2, _ = _frozen_reference(m, canvas2, key_mask, positions, window2, stored,
                                    _frozen_set(m, cache, canvas1, bs2, be2, length))
        torch.testing.assert_close(got2[1], ref2[1], rtol=1e-9, atol=1e-9)


def test_delayed_caches_one_step_after_commit():
    m = _model("llada")
    canvas, key_mask, positions, gs, g = _canvas(m)
    b, length = canvas.shape
    mgr = make_cache("delayed", m, key_mask, positions, gs, gs + GEN, refresh="block", step1_full=False)
    bs = torch.full((b,), gs)
    be = bs + BLOCK
    active = torch.ones(b, dtype=torch.bool)
    with torch.inference_mode():
        mgr.logits(canvas, active, bs, be, (gs, gs + BLOCK))
        assert torch.equal(mgr.cached, canvas != m.mask_id)  # prompt (and padding) cached after the first forward
        canvas1 = _fill(canvas, [(r, gs) for r in range(b)], g, m)  # commit at step 0
        mgr.logits(canvas1, active, bs, be, (gs, gs + BLOCK))
        # step 1 ran the committed position (not yet cached) and every masked one, and now caches it
        assert mgr.forwarded.tolist() == [length + GEN] * b
        assert mgr.cached[:, gs].all() and not mgr.cached[:, gs + 1:].any()
        mgr.logits(canvas1, active, bs, be, (gs + 1, gs + BLOCK))  # (LLaDA: no shift position needed)
        assert mgr.forwarded.tolist() == [length + GEN + GEN - 1] * b  # position gs is now served from cache


# --- (d) batches == single runs ----------------------------------------------------------------------------
@pytest.mark.parametrize("cache", ("none",) + CACHES)
@pytest.mark.parametrize("policy,opts", POLICIES)
def test_ragged_batch_equals_single_runs(model, cache, policy, opts):
    extra = {"vicinity": 2} if cache == "dual" else {}
    out = _gen(model, PROMPTS, cache, policy, **opts, **extra)
    for i, p in enumerate(PROMPTS):
        one = _gen(model, [p], cache, policy, **opts, **extra)
        assert torch.equal(out.tokens[i], one.tokens[0]), (cache, i)
        assert out.seq_nfe[i] == one.seq_nfe[0], (cache, i)
    if policy == "threshold":
        assert len(set(out.seq_nfe)) > 1 or out.nfe > max(out.seq_nfe)  # rows really were out of phase


# --- (e) NFE conventions ----------------------------------------------------------------------------------
def _run_with_stats(m, cache, policy="lowconf", prompts=PROMPTS, **opts):
    return dllm.generate(m, prompts, policy=policy, gen_length=GEN, block_length=BLOCK, steps=GEN, cache=cache,
                         stop_at_eos=False, **opts)


@pytest.mark.parametrize("cache,refresh,per_block,extra", [
    ("prefix", None, 1, {}), ("dual", None, 1, {}), ("prefix", 2, 2, {}), ("dual", 3, 2, {}), ("dual", "block", 1, {}),
    # S_b = 4 < 8: delayed refreshes at block open and, as dKV-Cache, at the block's step 1
    ("delayed", None, 2, {}), ("delayed", 2, 3, {}), ("delayed", 1, 4, {}),  # refresh 2: steps 0, 1, 2
    ("delayed", None, 1, {"step1_full": False}), ("delayed", 2, 2, {"step1_full": False}),
    ("delayed", 1, 4, {"step1_full": False}),
])
def test_nfe_and_refresh_counts(cache, refresh, per_block, extra):
    m = _model("llada")
    opts = {} if refresh is None else {"refresh": refresh}
    out = _run_with_stats(m, cache, **opts, **extra)
    blocks = GEN // BLOCK
    assert out.seq_nfe == [GEN] * 3 and out.nfe == GEN  # one forward per row per step; refresh fused
    assert out.cache_stats["refreshes"] == [blocks * per_block] * 3


def _expected_calls(trace) -> int:
    """Batched model calls a block-refresh cache makes, re-derived from the trace: per step, one full forward
    if some active row opens a block (its block start moved) and one cached forward if some active row continues."""
    calls, last = 0, {}
    for s in trace.steps:
        rows = [b for b in range(s.active.shape[0]) if s.active[b]]
        opening = {b for b in rows if last.get(b) != int(s.block_start[b])}
        calls += bool(opening) + bool(set(rows) - opening)
        last.update({b: int(s.block_start[b]) for b in rows})
    return calls


def test_nfe_one_per_step_when_rows_are_out_of_phase():
    m = _model("dream", peaky=40.0)
    out = _run_with_stats(m, "dual", "threshold", threshold=0.7, trace=True)
    single = [_run_with_stats(m, "dual", "threshold", prompts=[p], threshold=0.7).seq_nfe[0] for p in PROMPTS]
    assert out.seq_nfe == single and len(set(single)) > 1  # each row pays one forward per step it is active
    assert out.steps == max(single)
    # out.nfe counts batched calls: a step where some rows open a block while others read their cache makes two
    expected = _expected_calls(out.trace)
    assert out.nfe == expected and expected > out.steps, (out.nfe, expected, out.steps)
    assert out.cache_stats["refreshes"] == [GEN // BLOCK] * 3


def test_block_done_in_one_step_costs_one_forward():
    """Our convention is Fast-dLLM-later's: the completion check comes first, so a block decoded by its
    refresh forward costs 1 NFE (the original Fast-dLLM loop costs at least 2)."""
    m = _model("llada", peaky=40.0)
    for cache in ("none",) + CACHES:
        out = _gen(m, PROMPTS[:1], cache, "threshold", threshold=1e-9)
        assert out.seq_nfe == [GEN // BLOCK], cache


def test_stop_at_eos_rows_stop_costing():
    """With every cache, a row whose answer ends early stops paying forwards (fewer than with stop_at_eos=False)
    and keeps its text; the rest of the row is EOS. refresh=1 still equals the no-cache path."""
    from dllm.assets import asset_path

    m = dllm.load_model(asset_path("tiny-llada"), device="cpu")  # a trained model: its answers end with EOS
    eos = m.special.eos
    prompts = ["sort:8315=", "reverse:dllm42=", "add:12+34="]
    ref = None
    for cache in ("none",) + CACHES:
        run = dict(policy="lowconf", gen_length=GEN, block_length=BLOCK, steps=GEN, cache=cache)
        full = dllm.generate(m, prompts, stop_at_eos=False, **run)
        stop = dllm.generate(m, prompts, **run)
        counts = stop.generated_counts()
        assert counts == full.generated_counts() and stop.texts == full.texts, cache
        early = [i for i, n in enumerate(counts) if n < GEN]
        assert early, f"{cache}: no row ended early; the test needs one"
        for i, n in enumerate(counts):
            assert stop.tokens[i, :n].tolist() == full.tokens[i, :n].tolist(), (cache, i)  # same text
            assert (stop.tokens[i, n:] == eos).all(), (cache, i)
            if i in early:
                assert stop.seq_nfe[i] < full.seq_nfe[i], (cache, i, stop.seq_nfe, full.seq_nfe)
            else:
                assert stop.seq_nfe[i] == full.seq_nfe[i], (cache, i)
        if cache == "none":
            ref = stop
        else:
            fresh = dllm.generate(m, prompts, refresh=1, **run)
            assert torch.equal(fresh.tokens, ref.tokens) and fresh.seq_nfe == ref.seq_nfe, cache


# --- (f) errors and registry ------------------------------------------------------------------------------
def test_registry_and_options():
    names = caches()
    assert {"none", "prefix", "dual", "delayed"} <= set(names)
    for cache in CACHES:
        extra = ["step1_full"] if cache == "delayed" else []
        assert CACHES_REGISTRY.get(cache).option_names() == ["refresh", "vicinity", *extra]


@pytest.mark.parametrize("kwargs", [
    {"cache": "kv"}, {"cache": "dual", "refresh": 0}, {"cache": "dual", "refresh": "often"},
    {"cache": "prefix", "refresh": True}, {"cache": "delayed", "refresh": 2.5}, {"cache": "dual", "vicinity": -1},
    {"cache": "dual", "window": 3}, {"cache": "none", "refresh": 1},
])
def test_bad_cache_or_option_is_a_dllm_error(kwargs):
    m = _model("llada")
    with pytest.raises(DllmError):
        dllm.generate(m, PROMPTS[:1], gen_length=GEN, block_length=BLOCK, **kwargs)


def test_string_options_from_the_command_line():
    m = _model("llada")
    ref = _gen(m, PROMPTS[:1], "none")
    assert torch.equal(_gen(m, PROMPTS[:1], "dual", refresh="1").tokens, ref.tokens)
    assert _gen(m, PROMPTS[:1], "dual", refresh="block", vicinity="2").seq_nfe == ref.seq_nfe
