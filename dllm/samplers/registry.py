"""The policy and block-schedule registries (``dllm.registry`` idiom) and the options every policy accepts.

* ``POLICIES``: one entry per stable policy name; the built-ins are the modules of ``dllm.samplers.policies``
  (one file per method family). A factory takes its declared options and returns a :class:`Policy`.
* ``COMMON``: option groups every policy accepts (early commit, end-of-text prediction). Each group declares its
  options and an ``apply(policy, **given)`` that wraps the built policy (adds a modifier); a policy that declares
  one of these names itself receives it instead.
* ``SCHEDULES``: block schedules (``dllm.samplers.schedules``); a factory takes ``gen_length``,
  ``block_length``, ``steps`` and its declared options and returns a ``BlockSchedule``.
* ``PRESETS``: named decoding configurations (``dllm.samplers.presets``): a factory returns a :class:`Preset`,
  a policy with option values, a cache and a block schedule. Wherever a policy name is taken (``dllm.generate``,
  ``dllm generate/eval --policy``) a preset name is too; ``dllm.options.resolve_preset`` expands it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from dllm.errors import DllmError
from dllm.registry import Option, Registry
from dllm.samplers.base import Policy

PRESETS = Registry("preset", "dllm.samplers.presets")
POLICIES = Registry("policy", "dllm.samplers.policies", plural="policies", also=PRESETS)
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


@dataclass(frozen=True)
class Preset:
    """A named bundle of a decoding configuration: a policy (a ``POLICIES`` name) with option values (its own and
    the common ones), a cache with its option values and a block schedule with its option values. Option values
    are checked where the pieces are built, like a user's."""

    policy: str
    options: Mapping[str, Any] = field(default_factory=dict)
    cache: str = "none"
    cache_options: Mapping[str, Any] = field(default_factory=dict)
    block_schedule: str = "fixed"
    schedule_options: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line, e.g. ``ebsampler gamma=0.3, cache none, fixed blocks``."""
        def part(name: str, opts: Mapping[str, Any]) -> str:
            return " ".join([name] + [f"{k}={v}" for k, v in opts.items()])

        return (f"{part(self.policy, self.options)}, cache {part(self.cache, self.cache_options)}, "
                f"{part(self.block_schedule, self.schedule_options)} blocks")


def presets() -> dict[str, str]:
    """Preset name -> one-line description."""
    return PRESETS.summaries()


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
    if isinstance(name, str) and name not in POLICIES and name in PRESETS:
        raise DllmError(f"{name!r} is a preset ({PRESETS.get(name).build().describe()}), not a policy: "
                        "dllm.generate and the CLI take it as a policy name")
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


__all__ = ["POLICIES", "PRESETS", "SCHEDULES", "COMMON", "TEMPERATURE", "THRESHOLD", "CommonOptions", "Preset",
           "make_policy", "make_schedule", "policies", "policy_options", "presets", "register_common_options"]
