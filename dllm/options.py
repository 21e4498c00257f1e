"""The one option router: which piece of a decoding configuration takes each ``key=value`` option.

A configuration is a policy, a cache and a block schedule. Each declares its options in its registry entry (a
policy also accepts the common options of ``dllm.samplers.registry.COMMON``). ``dllm.generate``, the eval
runner, the CLI and the lm-eval adapter all route through :func:`route_options`, so a user writes
``threshold=0.9, refresh=4`` once and each piece receives its own. Two pieces declaring the same name would make
an option ambiguous: :func:`option_table` refuses such a configuration instead of guessing.

A preset (``dllm.samplers.registry.PRESETS``) names a whole configuration; every function here takes a preset
name where it takes a policy name and expands it with :func:`resolve_preset` first, so the entry points that
route through this module accept presets without knowing about them (``RoutedOptions.names`` is the expanded
configuration the caller builds).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from dllm.cache import CACHES
from dllm.errors import DllmError
from dllm.registry import Option
from dllm.samplers.base import Policy
from dllm.samplers.registry import POLICIES, PRESETS, SCHEDULES, Preset, make_policy, policy_options

#: the pieces of a decoding configuration, in routing order
PIECES = ("policy", "cache", "block_schedule")


#: what a cache and a block schedule are when a caller does not choose (a preset's take their place)
DEFAULT_CACHE, DEFAULT_SCHEDULE = "none", "fixed"


@dataclass(frozen=True)
class RoutedOptions:
    """Options split by the piece that takes them."""

    policy: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    block_schedule: dict[str, Any] = field(default_factory=dict)
    #: (policy, cache, block_schedule) the options were routed to: the caller's, or a preset's expansion
    names: tuple[Any, str, Any] = (None, DEFAULT_CACHE, DEFAULT_SCHEDULE)

    def merged(self) -> dict[str, Any]:
        return {**self.policy, **self.cache, **self.block_schedule}


def preset_of(policy: Any) -> Preset | None:
    """The :class:`Preset` named ``policy``, or None when it names none (a policy name, an object)."""
    if not isinstance(policy, str) or policy in POLICIES or policy not in PRESETS:
        return None
    preset = PRESETS.get(policy).build()
    if preset.policy in PRESETS and preset.policy not in POLICIES:
        raise DllmError(f"preset {policy!r} names preset {preset.policy!r} as its policy; a preset's policy is one of: "
                        f"{', '.join(POLICIES.names())}")
    return preset


def resolve_preset(policy: Any, cache: str = DEFAULT_CACHE, block_schedule: Any = DEFAULT_SCHEDULE,
                   options: Mapping[str, Any] | None = None) -> tuple[Any, str, Any, dict[str, Any]]:
    """``(policy, cache, block_schedule, options)`` with a preset name expanded: its policy, its option values
    under the caller's (a caller's option overrides the preset's), and its cache and block schedule with their
    option values unless the caller names another cache or schedule than the defaults (``none``, ``fixed``),
    which then replaces the preset's together with its options. Anything else is returned as given.

    **Quirk**: the default names cannot be told from "not given" (``dllm.generate`` and the CLI pass them), so
    naming ``none`` or ``fixed`` keeps a preset's cache or schedule; ``refresh=1`` gives any cache the no-cache
    tokens and ``delimiter_threshold=inf`` makes adaptive blocks fixed, or the parts can be spelled out."""
    options = dict(options or {})
    preset = preset_of(policy)
    if preset is None:
        return policy, cache, block_schedule, options
    merged = dict(preset.options)
    if cache == DEFAULT_CACHE:
        cache = preset.cache
        merged.update(preset.cache_options)
    if isinstance(block_schedule, str) and block_schedule == DEFAULT_SCHEDULE:
        block_schedule = preset.block_schedule
        merged.update(preset.schedule_options)
    merged.update(options)
    return preset.policy, cache, block_schedule, merged


def _declared(policy: str | Policy, cache: str, block_schedule: Any) -> dict[str, list[Option]]:
    return {
        "policy": policy_options(policy) if isinstance(policy, str) else [],
        "cache": list(CACHES.get(cache).options),
        "block_schedule": list(SCHEDULES.get(block_schedule).options) if isinstance(block_schedule, str) else [],
    }


def option_table(policy: str | Policy, cache: str = "none", block_schedule: Any = "fixed"
                 ) -> dict[str, tuple[str, Option]]:
    """Option name -> (piece, declared option) for one configuration (objects passed instead of names declare
    nothing). Unknown names of a policy, cache or schedule are one-line errors; a name declared by two pieces
    is an error naming both. For a preset, the table of its expansion, each option's default being the
    preset's value where it sets one."""
    if preset_of(policy) is not None:
        policy, cache, block_schedule, values = resolve_preset(policy, cache, block_schedule)
        table = option_table(policy, cache, block_schedule)
        return {k: (piece, replace(opt, default=values[k]) if k in values else opt)
                for k, (piece, opt) in table.items()}
    names = {"policy": policy if isinstance(policy, str) else f"<{type(policy).__name__}>",
             "cache": cache,
             "block_schedule": block_schedule if isinstance(block_schedule, str) else "<object>"}
    table: dict[str, tuple[str, Option]] = {}
    for piece, opts in _declared(policy, cache, block_schedule).items():
        for opt in opts:
            if opt.name in table:
                other = table[opt.name][0]
                raise DllmError(
                    f"option {opt.name!r} is declared by both {other} {names[other]!r} and {piece} {names[piece]!r}; "
                    "a plug-in must not reuse another piece's option name")
            table[opt.name] = (piece, opt)
    return table


def route_options(policy: str | Policy, cache: str, block_schedule: Any, options: Mapping[str, Any]
                  ) -> RoutedOptions:
    """Split ``options`` by piece (a preset is expanded first, its values under the caller's; ``names`` says what
    to build). A name no piece declares is an error listing the allowed names. Values are checked by the piece
    that receives them when it is built."""
    given = policy
    policy, cache, block_schedule, options = resolve_preset(policy, cache, block_schedule, options)
    table = option_table(policy, cache, block_schedule)
    unknown = sorted(set(options) - set(table))
    if unknown:
        what = f"policy {policy!r}" if isinstance(policy, str) else "this policy"
        if given is not policy:
            what = f"preset {given!r} ({what})"
        raise DllmError(f"unknown option {unknown[0]!r} for {what} with cache {cache!r}"
                        f"{'' if block_schedule == 'fixed' else f' and block schedule {block_schedule!r}'}; "
                        f"allowed: {', '.join(sorted(table)) or 'none'}")
    parts: dict[str, dict[str, Any]] = {p: {} for p in PIECES}
    for key, value in options.items():
        parts[table[key][0]][key] = value
    return RoutedOptions(**parts, names=(policy, cache, block_schedule))


def check_option_values(policy: str | Policy, cache: str, block_schedule: Any, options: Mapping[str, Any]
                        ) -> RoutedOptions:
    """Route ``options`` and check every value against its declaration, without building anything (for
    validating a whole run before any model work). Returns the routed options."""
    routed = route_options(policy, cache, block_schedule, options)
    table = option_table(*routed.names)
    for key, value in routed.merged().items():
        if value is not None:
            table[key][1].check(value)
    return routed


def check_configuration(policy: str | Policy, cache: str, block_schedule: Any, options: Mapping[str, Any]
                        ) -> RoutedOptions:
    """Everything about a decoding configuration that needs no model and no lengths: the names of its pieces, the
    option names and values (their declarations), and the policy's rules across options (by building it). The
    CLI runs it before loading a checkpoint. Returns the routed options."""
    routed = check_option_values(policy, cache, block_schedule, options)
    make_policy(routed.names[0], **routed.policy)
    return routed


__all__ = ["DEFAULT_CACHE", "DEFAULT_SCHEDULE", "PIECES", "RoutedOptions", "check_configuration", "check_option_values",
           "option_table", "preset_of", "resolve_preset", "route_options"]
