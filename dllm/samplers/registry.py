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

    def own_options(self) -> list[str]:
        """The factory's keyword arguments."""
        return [p for p in inspect.signature(self.build).parameters]

    def options(self) -> list[str]:
        """Every option the policy accepts: its own, then the common ones (early commit, EoTP, ...)."""
        own = self.own_options()
        return own + [n for group in _COMMON for n in group.names if n not in own]


@dataclass(frozen=True)
class CommonOptions:
    """Options every policy accepts; ``apply(policy, **given)`` wraps the built policy (adds a modifier).
    A factory that declares one of these names itself receives it instead."""

    names: tuple[str, ...]
    summary: str
    apply: Callable[..., Policy]


_REGISTRY: dict[str, PolicySpec] = {}
_COMMON: list[CommonOptions] = []


def register_policy(name: str, summary: str) -> Callable[[Callable[..., Policy]], Callable[..., Policy]]:
    """Decorator: register a factory ``build(**options) -> Policy`` under a stable name."""

    def wrap(fn: Callable[..., Policy]) -> Callable[..., Policy]:
        _REGISTRY[name] = PolicySpec(name, summary, fn)
        return fn

    return wrap


def register_common_options(names: tuple[str, ...], summary: str
                            ) -> Callable[[Callable[..., Policy]], Callable[..., Policy]]:
    """Decorator: ``apply(policy, **options) -> Policy`` runs after any policy's factory when one of
    ``names`` is given (in registration order), so e.g. ``early_commit=True`` works with every policy."""

    def wrap(fn: Callable[..., Policy]) -> Callable[..., Policy]:
        if not any(g.names == tuple(names) for g in _COMMON):
            _COMMON.append(CommonOptions(tuple(names), summary, fn))
        return fn

    return wrap


def common_options() -> dict[str, str]:
    """Option names every policy accepts -> one-line description of their group."""
    _load_builtin()
    return {n: g.summary for g in _COMMON for n in g.names}


def _load_builtin() -> None:
    # Importing the modules registers their policies.
    from dllm.samplers import baseline, research  # noqa: F401


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
    own = spec.own_options()
    policy = spec.build(**{k: v for k, v in given.items() if k in own})
    for group in _COMMON:
        sub = {k: given[k] for k in group.names if k in given and k not in own}
        if sub:
            policy = group.apply(policy, **sub)
    return policy


def check_probability(name: str, value: float, allow_zero: bool = False) -> float:
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
