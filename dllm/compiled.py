"""Faster forwards with the same tokens: ``dllm.generate(..., compile="none"|"compile"|"cudagraph")``.

A cached block forward at batch 1 reads every weight once for 32 query tokens, so it is bound by memory
bandwidth; in eager PyTorch the ~15 kernels of each of the 32 layers are launched one by one from Python, and
that launch overhead costs about as much as the math. Two ways to remove it:

* ``"cudagraph"``: the cached steps' model call (``KVStoreCache._forward_fresh``) is captured into a CUDA graph
  per shape (query tokens T, window W) and replayed. The graph runs exactly the kernels the eager call launches,
  on the same data, so the tokens are the eager tokens bit for bit. Only steps where every row of the batch takes
  the cached forward are graphed (a batch whose rows are at different points falls back to eager), and a shape
  is captured when it is seen the second time within a call (the delayed cache changes T almost every step,
  so most of its shapes are never captured; at most 16 shapes are). Graphs live for one ``generate`` call:
  capture costs about two forwards per shape (a warm-up and the capture) and is part of the timed call. The
  graphs of a call share one memory pool: they never run at the same time, and a graph's output is copied out
  right after its replay, before another graph can reuse that memory. Full forwards and the
  sampling step stay eager: the sampling step gathers the candidates of each row (data-dependent shapes, host
  synchronisations), which a graph cannot hold without changing which kernel reduces which rows, and hence the
  confidences' last bits. Needs CUDA.
* ``"compile"``: ``torch.compile`` (Inductor, dynamic shapes) of every model forward and of the policy's scorer
  (the vocabulary-wide part of the sampling step). The cache's K/V hook stays eager (a graph break), so the
  stores are written exactly as without compilation. Inductor fuses and reorders floating-point work, so the
  logits can differ in their last bits: tokens are identical where no two candidates are that close (checked
  on the tiny float32 models in ``tests/test_compiled.py``), not guaranteed in bf16. The first call of each
  shape compiles (tens of seconds on a CPU).

To keep the stores at fixed addresses for the graphs, a graphed cache copies a freshly stored layer into its
own static buffer before the next cached step (once per full forward, about two store sizes of traffic). The
torch path of ``scatter_kv`` selects the written slots with a boolean mask, which synchronises with the host
and cannot be captured, so graphed steps use :func:`scatter_kv_static`, which writes the same values with
static shapes (the Triton kernel is captured as it is).
"""

from __future__ import annotations

import copy
import functools
from collections import Counter
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from dllm.cache.managers import KVStoreCache
from dllm.errors import DllmError, check_choice
from dllm.kernels import scatter_kv_triton, use_triton

COMPILE_MODES = ("none", "compile", "cudagraph")


def check_compile_mode(mode: str, device: torch.device) -> str:
    """The mode, checked: one of :data:`COMPILE_MODES`; ``"cudagraph"`` needs a model on CUDA."""
    check_choice("compile", mode, COMPILE_MODES)
    if mode == "cudagraph" and device.type != "cuda":
        raise DllmError(f"compile='cudagraph' needs a model on CUDA, got one on {device.type}; "
                        "use compile='compile' or 'none'")
    return mode


def accelerate_cache(cache: Any, mode: str) -> Any:
    """Make ``cache`` (a freshly built cache manager) run its forwards in ``mode``; returns it."""
    if mode == "compile":
        cache.model = compiled_model(cache.model)
    elif mode == "cudagraph" and isinstance(cache, KVStoreCache):
        cache.__class__ = _graphed_class(type(cache))
        cache._graphs, cache._seen, cache._static_kv, cache._replays, cache._pool = {}, Counter(), None, 0, None
    return cache


def accelerate_policy(policy: Any, mode: str) -> Any:
    """``policy`` with its scorer compiled (``"compile"``), as a shallow copy so a caller's object is untouched."""
    if mode != "compile":
        return policy
    fast = copy.copy(policy)
    fast.scorer = torch.compile(policy.scorer, dynamic=True)
    return fast


# --- torch.compile ------------------------------------------------------------------------------------------

class _CompiledModel:
    """Calls a compiled ``model.forward``; every other attribute is the model's. The K/V hook is wrapped in
    ``torch.compiler.disable`` (always a hook: without one, an identity hook with the key mask, which is what
    the model does without a hook) so Dynamo never traces a cache's Python state."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._forward = torch.compile(model.forward, dynamic=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, input_ids: Tensor, position_ids: Tensor | None = None, key_mask: Tensor | None = None,
                 kv_hook: Any = None, logits_index: Tensor | slice | None = None) -> Tensor:
        if kv_hook is None:
            def kv_hook(layer: int, k: Tensor, v: Tensor, key_mask: Tensor | None = key_mask):
                return k.contiguous(), v.contiguous(), key_mask  # the strides a store has: fewer recompiles
        return self._forward(input_ids, position_ids, key_mask, torch.compiler.disable(kv_hook), logits_index)


def compiled_model(model: Any) -> _CompiledModel:
    """One compiled wrapper per model, kept on the model (so later calls reuse its compiled code)."""
    wrapper = model.__dict__.get("_dllm_compiled")
    if wrapper is None:
        wrapper = model.__dict__["_dllm_compiled"] = _CompiledModel(model)
    return wrapper


# --- CUDA graphs --------------------------------------------------------------------------------------------

def scatter_kv_static(cache: Tensor, fresh: Tensor, positions: Tensor) -> None:
    """``scatter_kv`` with static shapes, for CUDA-graph capture: the same result as ``scatter_kv_torch``.

    cache [B, H, L, D], fresh [B, H, T, D], positions [B, T] (unique per row, -1 = skip). Every slot writes:
    a skipped slot is sent to a distinct position that no kept slot writes (the r-th skipped slot of a row to
    the r-th unwritten position) and writes back the value already there, so no position is written twice
    and no boolean selection (a host synchronisation) is needed. There are enough unwritten positions since
    T <= L."""
    b, h, length, d = cache.shape
    keep = positions >= 0
    sink = torch.full_like(positions, length)  # an extra column absorbs the skipped slots' marks
    taken = torch.zeros(b, length + 1, dtype=torch.bool, device=cache.device)
    taken.scatter_(1, torch.where(keep, positions, sink), True)
    free = ~taken[:, :length]  # [B, L]
    rank = free.long().cumsum(1) - 1  # rank of each unwritten position among the unwritten ones
    nth_free = torch.zeros(b, length + 1, dtype=torch.long, device=cache.device)
    cols = torch.arange(length, device=cache.device).expand(b, -1)
    nth_free.scatter_(1, torch.where(free, rank, torch.full_like(rank, length)), cols)
    skip_rank = ((~keep).long().cumsum(1) - 1).clamp(min=0)
    index = torch.where(keep, positions, nth_free.gather(1, skip_rank))[:, None, :, None].expand(b, h, -1, d)
    src = torch.where(keep[:, None, :, None], fresh.to(cache.dtype), cache.gather(2, index))
    cache.scatter_(2, index, src)


class CudaGraphForwards:
    """Mixin put in front of a ``KVStoreCache`` subclass by :func:`accelerate_cache`: replays the cached
    steps' model calls from CUDA graphs (module docstring)."""

    #: at most this many shapes are captured per call; further shapes run eagerly
    max_graphs = 16

    _graphs: dict[tuple[int, int], SimpleNamespace]
    _seen: Counter
    _static_kv: tuple[list[Tensor], list[Tensor]] | None
    _replays: int
    _pool: Any  #: the memory pool the graphs of this cache share

    def stats(self) -> dict[str, Any]:
        """Adds ``graphs`` (shapes captured) and ``graph_replays`` (cached steps served by a graph)."""
        return {**super().stats(), "graphs": len(self._graphs), "graph_replays": self._replays}

    def _graphable(self, x: Tensor, all_rows: bool) -> bool:
        return all_rows and x.is_cuda

    def _forward_fresh(self, x, pos, write_at, km, ridx, all_rows, logits_index):
        if not self._graphable(x, all_rows):
            return super()._forward_fresh(x, pos, write_at, km, ridx, all_rows, logits_index)
        key = (x.shape[1], logits_index.shape[1])
        self._seen[key] += 1
        entry = self._graphs.get(key)
        if entry is None:
            if self._seen[key] < 2 or len(self._graphs) >= self.max_graphs:
                return super()._forward_fresh(x, pos, write_at, km, ridx, all_rows, logits_index)
            self._adopt_stores()
            entry = self._graphs[key] = self._capture(x, pos, write_at, km, logits_index)
        self._adopt_stores()
        for name, value in (("x", x), ("pos", pos), ("write_at", write_at), ("km", km), ("index", logits_index)):
            getattr(entry, name).copy_(value)
        entry.graph.replay()
        self._replays += 1
        return entry.out.clone()  # the graph overwrites its output at the next replay

    def _adopt_stores(self) -> None:
        """Keep every layer's K/V store in this cache's static buffers (a full forward stores new tensors)."""
        if self._static_kv is None:
            self._static_kv = ([torch.empty_like(t) for t in self.keys], [torch.empty_like(t) for t in self.values])
        for store, static in zip((self.keys, self.values), self._static_kv):
            for i, t in enumerate(store):
                if t is not static[i]:
                    static[i].copy_(t)
                    store[i] = static[i]

    def _graph_call(self, s: SimpleNamespace) -> Tensor:
        """The eager ``_forward_fresh`` of all rows on the static inputs, with a capturable scatter."""

        def hook(layer: int, k: Tensor, v: Tensor):
            keys, values = self.keys[layer], self.values[layer]
            for store, fresh in ((keys, k), (values, v)):
                if use_triton(store, fresh, s.write_at):
                    scatter_kv_triton(store, fresh, s.write_at)
                else:
                    scatter_kv_static(store, fresh, s.write_at)
            return keys, values, s.km

        return self.model(s.x, s.pos, None, hook, logits_index=s.index)

    def _capture(self, x: Tensor, pos: Tensor, write_at: Tensor, km: Tensor, logits_index: Tensor) -> SimpleNamespace:
        s = SimpleNamespace(x=x.clone(), pos=pos.clone(), write_at=write_at.clone(), km=km.clone(),
                            index=logits_index.clone())
        self._record(s)
        return s

    def _record(self, s: SimpleNamespace) -> None:
        """Capture ``_graph_call(s)`` into ``s.graph`` (replayed with ``s.graph.replay()``), output in ``s.out``."""
        side, main = torch.cuda.Stream(device=s.x.device), torch.cuda.current_stream(s.x.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):  # warm-up (Triton JIT, cuBLAS workspaces); writes the K/V the replay writes
            self._graph_call(s)
        main.wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        s.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(s.graph, pool=self._pool):
            s.out = self._graph_call(s)


@functools.cache
def _graphed_class(cls: type) -> type:
    return type(f"Graphed{cls.__name__}", (CudaGraphForwards, cls), {})


__all__ = ["COMPILE_MODES", "CudaGraphForwards", "accelerate_cache", "accelerate_policy", "check_compile_mode",
           "compiled_model", "scatter_kv_static"]
