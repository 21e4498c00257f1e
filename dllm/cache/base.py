"""Cache managers own every model forward of one ``generate`` call.

The engine asks for logits over a window of canvas positions; the manager decides what to run through the
model (the whole canvas, only the active block, only uncached positions ...) and which keys/values to reuse,
and returns logits aligned to canvas positions (Dream's one-position shift handled here). The engine never
knows which cache runs, the model never knows there is a cache (it only sees a ``KVHook``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dllm.models.base import DiffusionLM
from dllm.registry import Registry

#: cache managers by name; the modules of ``dllm.cache`` register theirs
CACHES = Registry("cache", "dllm.cache")


class CacheManager:
    """Base class. Subclasses implement ``_window_logits``; this class keeps NFE accounting and the canvas
    facts (key mask of the padded prompts, absolute positions) every manager needs."""

    name = "base"

    def __init__(self, model: DiffusionLM, key_mask: Tensor, positions: Tensor, gen_start: int, gen_end: int) -> None:
        self.model = model
        self.key_mask = key_mask  #: [B, L] False on left padding
        self.positions = positions  #: [B, L] absolute RoPE positions (padding-aware)
        self.gen_start = gen_start
        self.gen_end = gen_end
        self.shift = 1 if model.logit_shift else 0
        self.nfe = torch.zeros(key_mask.shape[0], dtype=torch.long)  #: forwards each row took part in
        self.calls = 0  #: batched model calls

    def stats(self) -> dict[str, Any]:
        """Counters of this call, copied into ``GenerationOutput.cache_stats``: ``calls`` (batched model calls),
        ``nfe`` (per row: forwards it took part in); subclasses add theirs."""
        return {"calls": self.calls, "nfe": self.nfe.tolist()}

    def logits(self, canvas: Tensor, active: Tensor, block_start: Tensor, block_end: Tensor,
               window: tuple[int, int]) -> Tensor:
        """[B, W, V] logits predicting canvas positions ``window[0] .. window[1]-1`` for the ``active`` rows
        (inactive rows: unspecified). ``block_start``/``block_end`` [B] are each row's current block (the end
        may be a schedule's lookahead)."""
        return self._window_logits(canvas, active, block_start, block_end, window)

    def _window_logits(self, canvas: Tensor, active: Tensor, block_start: Tensor, block_end: Tensor,
                       window: tuple[int, int]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- helpers for subclasses ---------------------------------------------------------------------
    def _count(self, rows: Tensor) -> None:
        self.nfe += rows.to(self.nfe.device, torch.long).cpu()
        self.calls += 1

    def full_forward(self, canvas: Tensor, rows: Tensor, window: tuple[int, int], kv_hook=None) -> Tensor:
        """Forward the whole canvas of ``rows`` and return the window's logits for those rows [R, W, V]. Without a
        ``kv_hook`` the leading columns that are padding in every row are skipped (continuous batching pads every
        prompt to the longest of the call, dllm/batching.py); the key mask hides them anyway."""
        ws, we = window
        idx = rows.nonzero().squeeze(1)
        all_rows = idx.numel() == canvas.shape[0]
        x = canvas if all_rows else canvas[idx]
        pos = self.positions if all_rows else self.positions[idx]
        km = self.key_mask if all_rows else self.key_mask[idx]
        self._count(rows)
        lo = 0
        if kv_hook is None:  # nothing is stored by canvas position: drop the columns that are padding in every row
            lo = min(int(km.any(0).long().argmax()), ws - self.shift)
            x, pos, km = x[:, lo:], pos[:, lo:], km[:, lo:]
        return self.model(x, pos, km, kv_hook, logits_index=slice(ws - self.shift - lo, we - self.shift - lo))


def scatter_rows(out: Tensor, rows: Tensor, batch: int) -> Tensor:
    """Expand [R, ...] results of the active rows back to [B, ...] (zeros elsewhere)."""
    if out.shape[0] == batch:
        return out
    full = out.new_zeros((batch, *out.shape[1:]))
    full[rows.nonzero().squeeze(1)] = out
    return full


@CACHES.register("none", "no cache: every step recomputes the whole canvas")
class NoCache(CacheManager):
    """Every step recomputes the whole canvas (the references' ``generate``)."""

    name = "none"

    def _window_logits(self, canvas, active, block_start, block_end, window):
        return scatter_rows(self.full_forward(canvas, active, window), active, canvas.shape[0])


class ManagerWrapper:
    """Base of a manager a policy wraps around the engine's (``wrap_cache``, e.g. FreeDave's drafts, WINO's
    shadows): ``name``, ``model``, ``calls`` and ``nfe`` are the inner manager's, ``stats`` is the inner one's plus
    :meth:`extra_stats`. Subclasses implement ``logits`` (and whatever else the engine calls)."""

    def __init__(self, inner: CacheManager) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model

    @property
    def calls(self) -> int:
        return self.inner.calls

    @property
    def nfe(self) -> Tensor:
        return self.inner.nfe

    def stats(self) -> dict[str, Any]:
        return {**self.inner.stats(), **self.extra_stats()}

    def extra_stats(self) -> dict[str, Any]:
        return {}
