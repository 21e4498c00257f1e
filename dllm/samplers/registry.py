"""Named policies (stable names used by the CLI, the API and scripts) and their validated options."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from dllm.errors import DllmError
from dllm.samplers.base import Policy


@dataclass(frozen=True)
class PolicySpec:
    name: str
    summary: str
    build: Callable[..., Policy]

    def options(self) -> list[str]:
        return [p for p in inspect.signature(self.build).parameters]


_REGISTRY: dict[str, PolicySpec] = {}


def register_policy(name: str, summary: str) -> Callable[[Callable[..., Policy]], Callable[..., Policy]]:
    """Decorator: register a factory ``build(**options) -> Policy`` under a stable name."""

    def wrap(fn: Callable[..., Policy]) -> Callable[..., Policy]:
        _REGISTRY[name] = PolicySpec(name, summary, fn)
        return fn

    return wrap


def _load_builtin() -> None:
    # Importing the modules registers their policies.
    from dllm.samplers import baseline  # noqa: F401

    try:
        from dllm.samplers import research  # noqa: F401
    except ImportError:  # research policies are optional at import time while they are developed
        pass


def policies() -> dict[str, str]:
    """Policy name -> one-line description."""
    _load_builtin()
    return {name: spec.summary for name, spec in _REGISTRY.items()}


def policy_spec(name: str) -> PolicySpec:
    _load_builtin()
    if name not in _REGISTRY:
        raise DllmError(f"unknown policy {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def make_policy(name: str | Policy, **options: Any) -> Policy:
    """Build a policy by name; options are validated against the factory's keyword arguments. Options whose
    value is ``None`` mean "the policy's default" and are dropped, so callers can pass every CLI flag."""
    if isinstance(name, Policy):
        if options:
            raise DllmError(f"options {sorted(options)} given together with a ready Policy object; set them on the policy")
        return name
    spec = policy_spec(name)
    allowed = spec.options()
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise DllmError(
            f"unknown option {unknown[0]!r} for policy {name!r}; allowed: {', '.join(allowed) if allowed else 'none'}"
        )
    return spec.build(**given)


def check_probability(name: str, value: float, low_open: bool = True, allow_zero: bool = False) -> float:
    """Validate a value in (0, 1] (or [0, 1]) with a one-line error."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DllmError(f"{name} must be a number in (0, 1], got {value!r}") from None
    lo_ok = v >= 0 if allow_zero else v > 0
    if not (lo_ok and v <= 1):
        raise DllmError(f"{name} {value!r} is outside {'[0, 1]' if allow_zero else '(0, 1]'}")
    return v


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DllmError(f"{name} must be a number, got {value!r}") from None
    if v < 0 or (v == 0 and not allow_zero) or v != v:
        raise DllmError(f"{name} {value!r} must be {'>= 0' if allow_zero else '> 0'}")
    return v
