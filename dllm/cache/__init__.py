"""KV-cache managers (``none``, ``prefix``, ``dual``, ``delayed``) and their registry.

``CACHES`` follows the ``dllm.registry`` idiom: every module of this package is imported on first lookup, and
each registers its managers with their declared options, so a new cache is one new file here (subclass
``KVStoreCache`` from ``managers.py`` and define ``_fresh``).
"""

from __future__ import annotations

from typing import Any

from dllm.cache.base import CACHES, CacheManager, NoCache


def caches() -> dict[str, str]:
    """Cache name -> one-line description."""
    return CACHES.summaries()


def make_cache(name: str, model: Any, key_mask: Any, positions: Any, gen_start: int, gen_end: int,
               **options: Any) -> CacheManager:
    """Build the cache manager ``name`` for one ``generate`` call with validated ``options``."""
    return CACHES.get(name).build(model, key_mask, positions, gen_start, gen_end, **options)


__all__ = ["CACHES", "CacheManager", "NoCache", "caches", "make_cache"]
