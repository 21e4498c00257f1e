"""KV-cache managers (``none``, ``prefix``, ``dual``, ``delayed``) and their registry."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from dllm.cache.base import CacheManager, NoCache
from dllm.errors import DllmError

_CACHES: dict[str, tuple[str, Callable[..., CacheManager]]] = {
    "none": ("no cache: every step recomputes the whole canvas", NoCache),
}


def register_cache(name: str, summary: str, factory: Callable[..., CacheManager]) -> None:
    _CACHES[name] = (summary, factory)


def _load_builtin() -> None:
    from dllm.cache import managers  # noqa: F401  (registers prefix/dual/delayed)


def caches() -> dict[str, str]:
    """Cache name -> one-line description."""
    _load_builtin()
    return {name: summary for name, (summary, _) in _CACHES.items()}


def cache_options(name: str) -> list[str]:
    """Keyword options a cache accepts (beyond the canvas arguments every manager gets)."""
    _load_builtin()
    if name not in _CACHES:
        raise DllmError(f"unknown cache {name!r}; choose one of: {', '.join(_CACHES)}")
    params = list(inspect.signature(_CACHES[name][1]).parameters)
    return [p for p in params if p not in ("model", "key_mask", "positions", "gen_start", "gen_end")]


def make_cache(name: str, model: Any, key_mask: Any, positions: Any, gen_start: int, gen_end: int,
               **options: Any) -> CacheManager:
    allowed = cache_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DllmError(f"unknown option {unknown[0]!r} for cache {name!r}; allowed: {', '.join(allowed) or 'none'}")
    return _CACHES[name][1](model, key_mask, positions, gen_start, gen_end, **options)


__all__ = ["CacheManager", "NoCache", "caches", "cache_options", "make_cache", "register_cache"]
