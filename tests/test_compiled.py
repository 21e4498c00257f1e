"""``dllm.generate(compile=...)`` (``dllm/compiled.py``): the same tokens as the eager path.

* the static-shape scatter a CUDA graph captures writes exactly what ``scatter_kv_torch`` writes;
* the CUDA-graph bookkeeping (capture at a shape's second sighting, stores adopted into static buffers, inputs
  copied in, output copied out) runs on the CPU with a stand-in graph that replays the captured call eagerly and
  checks that the stores are still the tensors it was captured with (what a real graph's baked-in addresses need);
* real CUDA graphs, when CUDA is available (the GPU script runs this file);
* ``torch.compile`` on the tiny float32 models (slow: Inductor compiles for tens of seconds on a CPU).

Everything but the CUDA test runs on the CPU in float32, also on a machine with a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch

import dllm
import dllm.compiled as C
from dllm.errors import DllmError
from dllm.kernels import scatter_kv_torch

PROMPTS = ["sort:8315=", "copy:ab=", "add:12+7="]
LENGTHS = dict(gen_length=32, block_length=16, steps=16)


def test_scatter_kv_static_hand_example():
    # L = 4 store positions, T = 3 slots: slot 0 -> position 2, slot 1 skipped, slot 2 -> position 0.
    # Positions 0 and 2 take the fresh values 30 and 10; 1 and 3 keep 1 and 3. A skipped slot sent to position 0
    # (a naive clamp of -1) could overwrite the 30 written there.
    cache = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 4, 1)
    fresh = torch.tensor([10.0, 20.0, 30.0]).view(1, 1, 3, 1)
    C.scatter_kv_static(cache, fresh, torch.tensor([[2, -1, 0]]))
    assert cache.flatten().tolist() == [30.0, 1.0, 10.0, 3.0]


def test_scatter_kv_static_matches_torch_on_random_cases():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        length = int(torch.randint(1, 12, (1,), generator=g))
        t = int(torch.randint(1, length + 1, (1,), generator=g))
        cache = torch.randn(3, 2, length, 4, generator=g)
        fresh = torch.randn(3, 2, t, 4, generator=g)
        pos = torch.stack([torch.randperm(length, generator=g)[:t] for _ in range(3)])
        pos[torch.rand(3, t, generator=g) < 0.4] = -1
        want = cache.clone()
        scatter_kv_torch(want, fresh, pos)
        C.scatter_kv_static(cache, fresh, pos)
        assert torch.equal(cache, want)


def test_compile_mode_errors_are_one_line():
    model = dllm.load_model("tiny-llada", device="cpu")
    with pytest.raises(DllmError, match=r"^unknown compile 'graphs'; choose one of: none, compile, cudagraph$"):
        dllm.generate(model, PROMPTS[:1], compile="graphs")
    with pytest.raises(DllmError, match=r"^compile='cudagraph' needs a model on CUDA, got one on cpu"):
        dllm.generate(model, PROMPTS[:1], compile="cudagraph")


class _EagerGraph:
    """Stands in for a CUDA graph on the CPU: ``replay`` reruns the captured call on the static inputs, after
    checking that every K/V store is the tensor the capture saw (a real graph writes to those addresses)."""

    def __init__(self, cache, s):
        self.cache, self.s = cache, s
        self.stores = [*cache.keys, *cache.values]

    def replay(self):
        assert all(a is b for a, b in zip([*self.cache.keys, *self.cache.values], self.stores, strict=True))
        self.s.out.copy_(self.cache._graph_call(self.s))


class _CpuGraphs(C.CudaGraphForwards):
    def _graphable(self, x, all_rows):
        return all_rows

    def _record(self, s):
        s.out = self._graph_call(s)
        s.graph = _EagerGraph(self, s)


def _use_cpu_graphs(monkeypatch):
    """compile="cudagraph" on the CPU, with the stand-in graph."""
    monkeypatch.setattr(C, "_graphed_class", lambda cls: type(f"CpuGraphed{cls.__name__}", (_CpuGraphs, cls), {}))
    monkeypatch.setattr(dllm.api, "check_compile_mode", lambda mode, device: mode)


@pytest.mark.parametrize("kind", ["tiny-llada", "tiny-dream"])
@pytest.mark.parametrize("cache", ["prefix", "dual", "delayed"])
def test_graph_bookkeeping_gives_the_eager_tokens(kind, cache, monkeypatch):
    model = dllm.load_model(kind, device="cpu")
    _use_cpu_graphs(monkeypatch)
    for policy in ("lowconf", "threshold"):
        # stop_at_eos=False keeps the rows in step, so every cached step is graphed; the default lets rows finish
        # at different steps, which exercises the eager fallback for partial batches
        for stop in (False, True):
            ref = dllm.generate(model, PROMPTS, policy=policy, cache=cache, stop_at_eos=stop, **LENGTHS)
            out = dllm.generate(model, PROMPTS, policy=policy, cache=cache, stop_at_eos=stop, compile="cudagraph",
                                **LENGTHS)
            assert torch.equal(out.tokens, ref.tokens), (policy, stop)
            assert out.seq_nfe == ref.seq_nfe
            assert out.cache_stats["refreshes"] == ref.cache_stats["refreshes"]
            if not stop and cache == "dual" and policy == "lowconf":
                # 2 blocks x 8 steps; steps 1-7 of a block are cached, all of one shape (T = block [+ 1 for Dream]):
                # the first is eager, the second captures, and the 12 after it replay (plus the capture's own)
                assert out.cache_stats["graphs"] == 1
                assert out.cache_stats["graph_replays"] == 13
            if not stop and policy == "lowconf":  # 7 cached steps a block: each block's shape is seen again
                assert out.cache_stats["graph_replays"] > 0


def test_graph_capture_waits_for_the_second_sighting(monkeypatch):
    model = dllm.load_model("tiny-llada", device="cpu")
    _use_cpu_graphs(monkeypatch)
    # one block of 4 steps: a full forward, then three cached forwards of one shape
    out = dllm.generate(model, PROMPTS[:1], cache="dual", gen_length=16, block_length=16, steps=4, stop_at_eos=False,
                        compile="cudagraph")
    assert (out.cache_stats["graphs"], out.cache_stats["graph_replays"]) == (1, 2)


def test_compile_leaves_the_callers_policy_alone():
    from dllm.samplers.registry import make_policy
    from dllm.samplers.scoring import ProbabilityScorer

    policy = make_policy("lowconf")
    fast = C.accelerate_policy(policy, "compile")
    assert isinstance(policy.scorer, ProbabilityScorer) and fast.scorer is not policy.scorer
    assert C.accelerate_policy(policy, "none") is policy and C.accelerate_policy(policy, "cudagraph") is policy


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("kind", ["tiny-llada", "tiny-dream"])
def test_cuda_graphs_give_the_eager_tokens(kind, kernels, monkeypatch):
    if kernels == "triton":
        from dllm.kernels import TRITON_INTERPRETED, triton_available

        if not triton_available() or TRITON_INTERPRETED:
            pytest.skip("compiled Triton kernels needed")
    monkeypatch.setitem(os.environ, "DLLM_KERNELS", kernels)
    for dtype in ("float32", "bfloat16"):
        model = dllm.load_model(kind, device="cuda", dtype=dtype)
        for cache in ("prefix", "dual", "delayed"):
            for policy in ("lowconf", "threshold"):
                kw = dict(policy=policy, cache=cache, stop_at_eos=False, **LENGTHS)
                ref = dllm.generate(model, PROMPTS, **kw)
                out = dllm.generate(model, PROMPTS, compile="cudagraph", **kw)
                assert torch.equal(out.tokens, ref.tokens), (dtype, cache, policy)
                assert out.seq_nfe == ref.seq_nfe
                if policy == "lowconf":  # threshold decodes a block in a step or two: no shape is seen twice
                    assert out.cache_stats["graph_replays"] > 0


@pytest.mark.slow
def test_torch_compile_gives_the_eager_tokens():
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    for kind, policies in (("tiny-llada", ("lowconf", "threshold")), ("tiny-dream", ("threshold",))):
        model = dllm.load_model(kind, device="cpu")
        for cache in ("dual", "none", "delayed"):
            for policy in policies:
                kw = dict(policy=policy, cache=cache, **LENGTHS)
                ref = dllm.generate(model, PROMPTS, **kw)
                out = dllm.generate(model, PROMPTS, compile="compile", **kw)
                assert torch.equal(out.tokens, ref.tokens), (kind, cache, policy)
                assert out.seq_nfe == ref.seq_nfe
    assert counters["stats"]["unique_graphs"] > before  # Dynamo did compile graphs
