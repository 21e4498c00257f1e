"""The policy and block-schedule registries (``dllm.registry`` idiom) and the options every policy accepts.

* ``POLICIES``: one entry per stable policy name; the built-ins are the modules of ``dllm.samplers.policies``
  (one file per method family). A factory takes its declared options and returns a :class:`Policy`.
* ``COMMON``: option groups every policy accepts (early commit, end-of-text prediction). Each group declares its
  options and an ``apply(policy, **given)`` that wraps the built policy (adds a modifier); a policy that declares
  one of these names itself receives it instead.
* ``SCHEDULES``: block schedules (``dllm.samplers.schedules``); a factory takes ``gen_length``,
  ``block_length``, ``steps`` and its declared options and returns a ``BlockSchedule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from dllm.errors import DllmError
from dllm.registry import Option, Registry
from dllm.samplers.base import Policy

POLICIES = Registry("policy", "dllm.samplers.policies", plural="policies")
SCHEDULES = Registry("block schedule", "dllm.samplers.schedules")

#: the sampling temperature every built-in policy declares
TEMPERATURE = Option("temperature", 0.0, "sampling temperature (0 = greedy argmax)", kind=float, low=0)
#: Fast-dLLM's confidence threshold
THRESHOLD = Option("threshold", 0.9, "commit every candidate whose confidence is >= threshold (at least one)",
                   kind=float, low=0, low_open=True, high=1)


@dataclass(frozen=True)
class CommonOptions:
    """Options every policy accepts; ``apply(policy, **given)`` wraps the built policy (adds a modifier)."""

    summary: str
    options: tuple[Option, ...]
    apply: Callable[..., Policy]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)


COMMON: list[CommonOptions] = []


def register_common_options(summary: str, options: Sequence[Option]
                            ) -> Callable[[Callable[..., Policy]], Callable[..., Policy]]:
    """Decorator: ``apply(policy, **given)`` runs after any policy's factory when one of the ``options`` is
    given (in registration order), so e.g. ``early_commit=True`` works with every policy."""

    def wrap(fn: Callable[..., Policy]) -> Callable[..., Policy]:
        names = tuple(o.name for o in options)
        if not any(g.names == names for g in COMMON):
            COMMON.append(CommonOptions(summary, tuple(options), fn))
        return fn

    return wrap


def policy_options(name: str) -> list[Option]:
    """Every option policy ``name`` accepts: its own, then the common ones it does not declare itself."""
    entry = POLICIES.get(name)
    own = entry.option_names()
    return list(entry.options) + [o for g in COMMON for o in g.options if o.name not in own]


def policies() -> dict[str, str]:
    """Policy name -> one-line description."""
    return POLICIES.summaries()


def make_policy(name: str | Policy, **options: Any) -> Policy:
    """Build a policy by name with validated options. ``None`` values mean "the default" and are dropped, so
    callers can pass every CLI flag."""
    if isinstance(name, Policy):
        if options:
            raise DllmError(f"options {sorted(options)} given together with a ready Policy object; set them on the policy")
        return name
    entry = POLICIES.get(name)
    given = {k: v for k, v in options.items() if v is not None}
    allowed = [o.name for o in policy_options(name)]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise DllmError(f"unknown option {unknown[0]!r} for policy {name!r}; allowed: {', '.join(allowed) or 'none'}")
    own = entry.option_names()
    policy = entry.build(**{k: v for k, v in given.items() if k in own})
    for group in COMMON:
        sub = {o.name: o.check(given[o.name]) for o in group.options if o.name in given and o.name not in own}
        if sub:
            policy = group.apply(policy, **sub)
    return policy


def make_schedule(name: str, gen_length: int, block_length: int, steps: int, **options: Any) -> Any:
    """Build a block schedule by name with validated options."""
    return SCHEDULES.get(name).build(gen_length, block_length, steps, **options)


__all__ = ["POLICIES", "SCHEDULES", "COMMON", "TEMPERATURE", "THRESHOLD", "CommonOptions", "make_policy",
           "make_schedule", "policies", "policy_options", "register_common_options"]
