"""KV-cache managers ``prefix``, ``dual`` (Fast-dLLM) and ``delayed`` (dKV-Cache-Decode); imported by
``dllm.cache`` to register them.

All three keep one position-indexed K/V store per layer, ``[B, Hkv, L, D]`` over the whole canvas, holding
post-RoPE keys (every canvas slot keeps its absolute position, so a cached key never needs re-rotation).
Each step, per active row, the manager either

* runs a **full forward** of the row's canvas (the refresh; it also overwrites the row's whole store), or
* runs a **cached forward** of a few positions: the *fresh* set ``F`` (positions whose K/V are recomputed
  and written into the store in place with ``scatter_kv``) plus the *query-only* positions the window still
  needs logits for. Queries attend over the row's whole store (cached K/V everywhere, fresh K/V on ``F``),
  with left padding masked out.

What differs between the caches is ``F``:

========== ===================================================================================== ===========
cache      fresh set F on a cached step (the rest of the store is reused)                        refresh
========== ===================================================================================== ===========
prefix     ``[block_start - shift, L)``: block and everything after it (Fast-dLLM PrefixCache)  ``"block"``
dual       ``[block_start - shift, block_end)``: the block only; the suffix is stale (DualCache) ``"block"``
delayed    positions whose K/V are not cached yet (dKV-Cache-Decode, see ``DelayedCache``)        ``8``
========== ===================================================================================== ===========

``shift`` is 1 for Dream: the prediction for position ``p`` is the model output at ``p - 1``, so the position
before the block is always run through the model (fresh for prefix/dual). Unlike Fast-dLLM, which shifts
inside the window and so reads position ``block_start`` from its own output, every logit returned here is
the correct one.

Options shared by the three caches (public API: ``dllm.generate(..., cache="dual", refresh=1)``):

* ``refresh`` -- when a row runs a full forward. ``"block"``: when it opens a block (fused with that block's
  first step, so it costs no extra forward). An int ``N >= 1``: at block open and then every ``N`` steps
  within the block (steps ``0, N, 2N, ...`` counted from the block's first step). ``refresh=1`` makes every
  step a full forward, i.e. exactly the no-cache tokens.
* ``vicinity`` -- ``K >= 0`` (default 0): dInfer's vicinity refresh. Cached steps also recompute the K/V of the
  ``K`` positions before and the ``K`` positions after the row's block (they go stale fastest).

NFE: one forward per active row per step, whatever runs (a full forward at block open replaces that step's
cached forward, it is not an extra one). Rows that open a block take a full forward while the other rows
of the batch take the cached forward in the same step: that is two batched model calls (``calls``) but each
row counts once (``nfe``). ``refreshes`` counts the full forwards of each row. Inactive rows are not computed.

Batches: rows may be at different blocks and have different prompt lengths; each row gets its own ``F``
(padded to the longest row with slots that are neither written nor attended to), so a row decodes as it
would alone.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import torch
from torch import Tensor

from dllm.cache.base import CACHES, CacheManager
from dllm.errors import DllmError
from dllm.kernels import scatter_kv
from dllm.models.base import DiffusionLM
from dllm.registry import Option


def check_refresh(refresh: Any) -> str | int:
    """``"block"`` or a positive int (digit strings from a command line are accepted)."""
    if isinstance(refresh, str):
        value = refresh.strip().lower()
        if value == "block":
            return "block"
        if value.isdigit() and int(value) >= 1:
            return int(value)
    elif isinstance(refresh, Integral) and not isinstance(refresh, bool) and int(refresh) >= 1:
        return int(refresh)
    raise DllmError(f"refresh must be 'block' or a positive integer (full forward every N steps), got {refresh!r}")


def check_vicinity(vicinity: Any) -> int:
    if isinstance(vicinity, str) and vicinity.strip().isdigit():
        return int(vicinity.strip())
    if isinstance(vicinity, Integral) and not isinstance(vicinity, bool) and int(vicinity) >= 0:
        return int(vicinity)
    raise DllmError(f"vicinity must be a non-negative integer (positions recomputed on each side of the block), got {vicinity!r}")


class KVStoreCache(CacheManager):
    """Shared machinery: per-layer K/V store, refresh schedule, full and cached forwards of row subsets.

    Subclasses define ``_fresh(rows, block_start, block_end) -> [R, L] bool`` (the positions a cached step
    recomputes) and may react to finished forwards in ``_after_forward``.
    """

    name = "kv"

    def __init__(self, model: DiffusionLM, key_mask: Tensor, positions: Tensor, gen_start: int, gen_end: int,
                 refresh: str | int = "block", vicinity: int = 0) -> None:
        super().__init__(model, key_mask, positions, gen_start, gen_end)
        self.refresh = check_refresh(refresh)
        self.vicinity = check_vicinity(vicinity)
        #: in-block steps (besides a block's opening step 0) that always take a full forward
        self.full_steps = torch.zeros(0, dtype=torch.long, device=key_mask.device)
        b, length = key_mask.shape
        device = key_mask.device
        self.length = length
        self.keys: list[Tensor | None] = [None] * model.num_layers
        self.values: list[Tensor | None] = [None] * model.num_layers
        self.cols = torch.arange(length, device=device)
        self.opened_at = torch.full((b,), -1, dtype=torch.long, device=device)  #: block_start at the last open
        self.block_step = torch.zeros(b, dtype=torch.long, device=device)  #: steps since the row opened its block
        self.refreshes = torch.zeros(b, dtype=torch.long)  #: full forwards per row
        self.forwarded = torch.zeros(b, dtype=torch.long)  #: positions run through the model per row (cost proxy)

    def stats(self) -> dict[str, Any]:
        """Adds ``refreshes`` (full forwards per row) and ``forwarded`` (positions run through the model per
        row, a cost proxy) to the base counters."""
        return {**super().stats(), "refreshes": self.refreshes.tolist(), "forwarded": self.forwarded.tolist()}

    # --- the step -------------------------------------------------------------------------------------
    def _window_logits(self, canvas: Tensor, active: Tensor, block_start: Tensor, block_end: Tensor,
                       window: tuple[int, int]) -> Tensor:
        opening = active & (block_start != self.opened_at)
        self.opened_at = torch.where(opening, block_start, self.opened_at)
        self.block_step = torch.where(opening, torch.zeros_like(self.block_step), self.block_step)
        full = opening | (active & torch.isin(self.block_step, self.full_steps))
        if self.refresh != "block":
            full = full | (active & (self.block_step % int(self.refresh) == 0))
        if any(k is None for k in self.keys):  # nothing stored yet (cannot happen after a first full forward)
            full = active.clone()
        cached = active & ~full

        parts = []
        if bool(full.any()):
            parts.append((full, self._full(canvas, full, window)))
        if bool(cached.any()):
            parts.append((cached, self._cached(canvas, cached, block_start, block_end, window)))
        self.block_step = self.block_step + active.long()

        batch = canvas.shape[0]
        if len(parts) == 1 and parts[0][1].shape[0] == batch:
            return parts[0][1]
        ref = parts[0][1]
        out = ref.new_zeros((batch, *ref.shape[1:]))
        for rows, logits in parts:
            out[rows.nonzero().squeeze(1)] = logits
        return out

    # --- forwards -------------------------------------------------------------------------------------
    def _full(self, canvas: Tensor, rows: Tensor, window: tuple[int, int]) -> Tensor:
        """Full forward of ``rows``; their whole store is overwritten with the fresh K/V."""
        ridx = rows.nonzero().squeeze(1)
        all_rows = ridx.numel() == canvas.shape[0]
        km = self.key_mask if all_rows else self.key_mask[ridx]

        def hook(layer: int, k: Tensor, v: Tensor):
            self._store(layer, ridx, all_rows, k, v)
            return k, v, km

        logits = self.full_forward(canvas, rows, window, kv_hook=hook)
        self.refreshes += rows.cpu().long()
        self.forwarded += rows.cpu().long() * self.length
        self._after_forward(canvas, ridx)
        return logits

    def _store(self, layer: int, ridx: Tensor, all_rows: bool, k: Tensor, v: Tensor) -> None:
        if all_rows:
            self.keys[layer] = k.contiguous()
            self.values[layer] = v.contiguous()
            return
        if self.keys[layer] is None:
            b = self.key_mask.shape[0]
            self.keys[layer] = k.new_zeros((b, *k.shape[1:]))
            self.values[layer] = v.new_zeros((b, *v.shape[1:]))
        self.keys[layer].index_copy_(0, ridx, k)
        self.values[layer].index_copy_(0, ridx, v)

    def _cached(self, canvas: Tensor, rows: Tensor, block_start: Tensor, block_end: Tensor,
                window: tuple[int, int]) -> Tensor:
        """Forward the fresh set plus the window's query positions of ``rows`` against their stores."""
        ridx = rows.nonzero().squeeze(1)
        all_rows = ridx.numel() == canvas.shape[0]
        km = self.key_mask if all_rows else self.key_mask[ridx]
        bs, be = block_start[ridx], block_end[ridx]
        cols = self.cols[None, :]

        fresh = self._fresh(ridx, bs, be)
        if self.vicinity:
            k = self.vicinity
            fresh = fresh | ((cols >= (bs - k)[:, None]) & (cols < (be + k)[:, None]))
        fresh = fresh & km
        ws, we = window
        lo, hi = ws - self.shift, we - self.shift
        need = fresh | ((cols >= lo) & (cols < hi))

        # Gather each row's needed positions in ascending order, padded to the longest row.
        counts = need.sum(1)
        t = int(counts.max())
        order = torch.argsort((~need).to(torch.uint8), dim=1, stable=True)[:, :t]
        slot_ok = torch.arange(t, device=canvas.device)[None, :] < counts[:, None]
        write_at = torch.where(slot_ok & fresh.gather(1, order), order, torch.full_like(order, -1))
        x = (canvas if all_rows else canvas[ridx]).gather(1, order)
        pos = (self.positions if all_rows else self.positions[ridx]).gather(1, order)
        logits_index = (need.long().cumsum(1) - 1)[:, lo:hi]

        self._count(rows)
        logits = self._forward_fresh(x, pos, write_at, km, ridx, all_rows, logits_index)
        self.forwarded[ridx.cpu()] += counts.cpu()
        self._after_forward(canvas, ridx)
        return logits

    def _forward_fresh(self, x: Tensor, pos: Tensor, write_at: Tensor, km: Tensor, ridx: Tensor, all_rows: bool,
                       logits_index: Tensor) -> Tensor:
        """The model call of a cached step: tokens ``x`` [R, T] at positions ``pos`` [R, T] attend over the stores
        of rows ``ridx`` [R] (key mask ``km`` [R, L]); each layer first writes the fresh K/V of slot j to store
        position ``write_at[r, j]`` (-1: query only). Returns logits [R, W, V] at ``logits_index`` [R, W].
        ``dllm.compiled`` replays this call from CUDA graphs."""

        def hook(layer: int, k: Tensor, v: Tensor):
            keys, values = self.keys[layer], self.values[layer]
            if not all_rows:
                keys, values = keys.index_select(0, ridx), values.index_select(0, ridx)
            scatter_kv(keys, k, write_at)
            scatter_kv(values, v, write_at)
            if not all_rows:
                self.keys[layer].index_copy_(0, ridx, keys)
                self.values[layer].index_copy_(0, ridx, values)
            return keys, values, km

        return self.model(x, pos, None, hook, logits_index=logits_index)

    # --- subclass hooks -------------------------------------------------------------------------------
    def _fresh(self, ridx: Tensor, block_start: Tensor, block_end: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _after_forward(self, canvas: Tensor, ridx: Tensor) -> None:
        pass


def _refresh_option(default: str | int) -> Option:
    return Option("refresh", default, "full forward at every block open ('block') or also every N steps (1 = no caching)",
                  kind=None, parse=check_refresh, allowed="block or an integer >= 1")


VICINITY = Option("vicinity", 0, "also recompute this many positions on each side of the block every step", kind=int,
                  low=0)


@CACHES.register("prefix", "Fast-dLLM prefix cache: reuse K/V before the block, recompute block + suffix; refresh per block",
                 options=[_refresh_option("block"), VICINITY])
class PrefixCache(KVStoreCache):
    """Fast-dLLM PrefixCache (docs/methods.md#fast-dllm). When a row opens a block, one full forward (that
    step's forward) records K/V of the whole canvas; later steps of the block recompute
    ``[block_start - shift, L)`` (the block and the masked suffix) and reuse the cached K/V of everything before
    it.

    Options: ``refresh`` (``"block"`` default, or N: also a full forward every N steps within a block;
    ``refresh=1`` = no caching) and ``vicinity`` (K: also recompute the K positions before the block).
    """

    name = "prefix"

    def _fresh(self, ridx, block_start, block_end):
        return self.cols[None, :] >= (block_start - self.shift)[:, None]


@CACHES.register("dual", "Fast-dLLM dual cache: recompute only the block, reuse prefix and (stale) suffix K/V; refresh per block",
                 options=[_refresh_option("block"), VICINITY])
class DualCache(KVStoreCache):
    """Fast-dLLM DualCache (docs/methods.md#fast-dllm). The full forward at block open caches K/V of every
    position; later steps recompute only the block (plus the position before it for Dream, plus whatever else
    the window asks logits for, as query-only positions), write the block's fresh K/V into the cache in place
    and attend over the whole cached sequence (the masked suffix keeps its stale K/V from the block open).

    Options: ``refresh`` (``"block"`` default, or N: also a full forward every N steps within a block;
    ``refresh=1`` = no caching) and ``vicinity`` (K: dInfer vicinity refresh, also recompute the K positions
    on each side of the block every step; dInfer uses 16).
    """

    name = "dual"

    def _fresh(self, ridx, block_start, block_end):
        cols = self.cols[None, :]
        return (cols >= (block_start - self.shift)[:, None]) & (cols < block_end[:, None])


@CACHES.register("delayed", "dKV-Cache-Decode: cache a token's K/V one step after it is decided; full refresh every 8 steps",
                 options=[_refresh_option(8), VICINITY,
                          Option("step1_full", True, "also a full forward at each block's step 1, as dKV-Cache does "
                                 "(false: step 1 is served from the cache)", kind=bool)])
class DelayedCache(KVStoreCache):
    """dKV-Cache-Decode (docs/methods.md#dkv-cache): a position's K/V are cached one step after it is committed,
    i.e. from the first forward in which it appears as its decided token; masked positions are never served from
    the cache, also not a position a revocable policy set back to the mask after it was cached.

    Every forward of a row marks the positions that were decided (not ``mask_id``) in its input canvas as
    cached: a token committed at step t is recomputed at t+1 and reused from t+2 on. Cached steps run the
    not-yet-cached positions (committed last step + every masked position, in all blocks) plus the window's
    query positions, attending over cached + fresh K/V. The prompt is cached after the first forward.

    Options: ``refresh`` (default 8: full forward at every block open and every 8 steps within a block, the
    dKV-Cache setting; ``"block"``: only at block open; ``1`` = no caching) and ``vicinity`` (K: also
    recompute the K positions on each side of the block every step).

    As the reference, a block's step 1 is a full forward too (``step1_full=True``, the default): it refreshes the
    prompt's and earlier blocks' K/V after step 0's commits. ``step1_full=False`` serves step 1 from the cache
    instead (one full forward fewer per block, the same NFE, K/V of the prompt one step staler): dllm's behaviour
    before this option existed. **Quirk**: for Dream a position is cached once it is decided (the reference's
    ``shift_type="right"``; its default ``"un"`` caches position q once q + 1 is decided).
    """

    name = "delayed"

    def __init__(self, model: DiffusionLM, key_mask: Tensor, positions: Tensor, gen_start: int, gen_end: int,
                 refresh: str | int = 8, vicinity: int = 0, step1_full: bool = True) -> None:
        super().__init__(model, key_mask, positions, gen_start, gen_end, refresh=refresh, vicinity=vicinity)
        if step1_full:
            self.full_steps = torch.ones(1, dtype=torch.long, device=key_mask.device)
        #: [B, L] positions whose stored K/V were computed with their decided token (padding counts as cached)
        self.cached = ~key_mask.clone()

    def _window_logits(self, canvas, active, block_start, block_end, window):
        # A revocable policy (WINO, Saber) may have set a decided position back to the mask since the last forward: its
        # stored K/V belong to the revoked token, so it is fresh again. A no-op for every other policy.
        self.cached &= (canvas != self.model.mask_id) | ~self.key_mask
        return super()._window_logits(canvas, active, block_start, block_end, window)

    def _fresh(self, ridx, block_start, block_end):
        return ~self.cached[ridx]

    def _after_forward(self, canvas: Tensor, ridx: Tensor) -> None:
        mask_id = self.model.mask_id
        self.cached[ridx] = (canvas[ridx] != mask_id) | ~self.key_mask[ridx]


__all__ = ["DelayedCache", "DualCache", "KVStoreCache", "PrefixCache", "check_refresh", "check_vicinity"]
