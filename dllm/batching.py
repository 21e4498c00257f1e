"""Continuous batching: when a row of the batch finishes, the next prompt takes its slot.

Why: rows of one batch finish after different numbers of forwards (a threshold policy commits a whole easy answer
in one step and a hard one over many; ``stop_at_eos`` ends short answers early). With static batches a finished
row's slot idles until the slowest row ends; with continuous batching every forward runs as many unfinished rows
as there are slots, until the queue of prompts runs dry. ``dllm.generate(model, prompts, batch_size=16)`` and
``dllm eval --batch-size 16`` do it by default on a CUDA model and run static batches on a CPU
(``dllm.api.default_continuous``: on a CPU continuous measured 0.74x-1.05x of static's speed, see below);
``continuous=True`` / ``--continuous`` and ``continuous=False`` / ``--no-continuous`` choose either anywhere.

Design (the loop is ``dllm.engine.denoise`` with ``slots``; this module holds what it needs to recycle a slot):

* **One padded slot tensor, one canvas width.** Every prompt of the call is left-padded to the longest prompt of
  the *whole call* (``build_canvas`` over all prompts), so every prompt's canvas row, key mask and RoPE positions
  are fixed before decoding starts and a slot is refilled by copying one row: the canvas never changes width and
  ``gen_start`` is the same for every slot. A row's tokens do not depend on its padding (the key mask hides it
  and positions skip it), which is the ragged batch == single invariant the engine already guarantees; continuous
  batching adds no new source of difference. The cost is padding: rows of different prompt lengths share
  forwards. Without a cache a forward skips the leading columns that are padding in all its rows
  (``CacheManager.full_forward``), so it is as wide as its longest row, not as the call's; a KV cache's full
  forwards run the whole width (its store is indexed by canvas position), its cached forwards only the positions
  they need. Re-padding the slots at block boundaries would avoid the fixed width at the price of moving every
  cache store; not done.
* **Per-row engine state** (undecided mask, block bounds, step counters, the row's random generator seeded with
  its prompt's seed) is reset for the refilled slot exactly as a fresh call sets it: the new row opens its first
  block on its next step.
* **Per-row policy state** (``PolicyState``, tensors indexed by row): :func:`reset_policy_rows` builds a fresh
  state for the batch and copies the refilled rows of every tensor whose first dimension is the batch and whose
  shape matches the fresh one. A buffer that grew during decoding (CreditDecoding's credit table, KLASS's history)
  has no fresh counterpart of its shape; the piece resets it in ``on_block_start``, which the engine calls for
  the new row at its first step (every admitted row opens a block). A piece whose per-call state changes shape and
  is not reset at block open would break this; every shipped policy is tested.
* **Per-row cache state**: :func:`reset_cache_rows` does the same over the manager's attributes (a fresh manager
  built over the slot tensors with the new rows in place): the key mask and positions rows, the NFE /
  refresh / forwarded counters, ``KVStoreCache``'s block bookkeeping (``opened_at`` back to -1, so the new row's
  first step is a full forward that rewrites its whole K/V store before anything reads it) and ``delayed``'s
  cached-position mask. The K/V stores themselves are not copied: the first full forward overwrites the row.
  Every shipped cache (``none``, ``prefix``, ``dual``, ``delayed``) refills this way.
* **Counters per prompt**: a slot's counters restart at 0 when it is refilled, and a prompt's tokens, NFE and
  per-row cache statistics are read from its slot before it is reused; ``GenerationOutput`` is in prompt order
  and ``seq_nfe[i]`` is prompt i's NFE had it run alone. ``nfe`` (batched model calls) is the cost of the whole
  call.
* **Refill order**: prompts join in the order given; when several slots free up in one step, the lowest slot
  takes the earliest waiting prompt. A row is finished when nothing of its generation is undecided, when a
  modifier finishes it (EoTP), or with ``stop_at_eos`` once its end token is final (the engine's existing stop
  rule), and it is refilled at the end of that same step.

**Quirk**: a cache manager that is neither ``NoCache`` nor a ``KVStoreCache`` (a third-party plug-in, or the
``ManagerWrapper`` that ``freedave`` and ``wino`` put around the engine's manager for their drafts and shadows)
cannot be assumed to keep all its per-row state in batch-first tensors, so with it ``continuous`` runs
consecutive static batches instead (same tokens, no refill), unless the manager sets ``refills_rows = True`` to
declare that it does.
``trace=True`` records one batch and is refused when the prompts do not fit in one.

What it buys depends on what a forward costs. Continuous batching cuts the number of batched forwards (rows per
forward stay near ``batch_size``), not the rows' own forwards (``sum(seq_nfe)`` is the same). On an accelerator,
where a forward of 16 rows costs little more than one of 4, fewer forwards is the gain; on a CPU, where a forward
costs about rows x width, only the per-call overhead is saved, and a workload whose slow rows have short prompts
loses to static batches once fresh long prompts join them (``benchmarks/batching.py`` measures both orders).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dllm.cache.base import CacheManager, NoCache
from dllm.cache.managers import KVStoreCache
from dllm.errors import DllmError
from dllm.samplers.base import Policy, PolicyState


def refills_rows(cache: CacheManager) -> bool:
    """Whether a slot of ``cache`` can be handed to a new prompt mid-call (see the module docstring)."""
    return bool(getattr(cache, "refills_rows", False)) or isinstance(cache, (NoCache, KVStoreCache))


def copy_rows(old: Any, new: Any, rows: Tensor, batch: int) -> None:
    """Copy the ``rows`` [B] bool of every batch-first tensor of ``new`` into the same-shaped tensor of ``old``,
    walking dicts, lists and tuples in parallel; anything else (and tensors whose shapes differ) is left alone."""
    if isinstance(old, Tensor) and isinstance(new, Tensor):
        if old.dim() > 0 and old.shape == new.shape and old.shape[0] == batch:
            r = rows.to(old.device)
            old[r] = new.to(old.device)[r]
    elif isinstance(old, dict) and isinstance(new, dict):
        for key in old.keys() & new.keys():
            copy_rows(old[key], new[key], rows, batch)
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new):
        for a, b in zip(old, new):
            copy_rows(a, b, rows, batch)


def reset_policy_rows(policy: Policy, state: PolicyState, rows: Tensor) -> None:
    """Give the ``rows`` [B] bool of ``state`` the values a fresh ``policy.init_state`` gives them."""
    fresh = policy.init_state(state.batch_size, state.device)
    copy_rows(state.values, fresh.values, rows, state.batch_size)


def reset_cache_rows(cache: CacheManager, fresh: CacheManager, rows: Tensor) -> None:
    """Give the ``rows`` [B] bool of ``cache`` the state of ``fresh`` (a manager of the same kind built over the
    same slot tensors): per-row counters, masks and bookkeeping. Batch-level values (``calls``) are kept."""
    batch = int(cache.key_mask.shape[0])
    for name, value in vars(cache).items():
        if isinstance(value, (Tensor, list, tuple, dict)) and name in vars(fresh):
            copy_rows(value, vars(fresh)[name], rows, batch)


def per_row_stats(stats: dict[str, Any], batch: int) -> list[str]:
    """Keys of ``CacheManager.stats()`` that hold one value per row (lists of the batch's length)."""
    return [k for k, v in stats.items() if isinstance(v, list) and len(v) == batch]


def seed_list(seed: int | Any, n: int) -> list[int]:
    """One seed per prompt: an int is shared by every prompt, a sequence gives each its own."""
    if seed is None:
        seed = 0
    seeds = [int(seed)] * n if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != n:
        raise DllmError(f"got {len(seeds)} seeds for a batch of {n}")
    return seeds


def generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


__all__ = ["copy_rows", "generator", "per_row_stats", "refills_rows", "reset_cache_rows", "reset_policy_rows",
           "seed_list"]
