"""The one option router: which piece of a decoding configuration takes each ``key=value`` option.

A configuration is a policy, a cache and a block schedule. Each declares its options in its registry entry (a
policy also accepts the common options of ``dllm.samplers.registry.COMMON``). ``dllm.generate``, the eval
runner, the CLI and the lm-eval adapter all route through :func:`route_options`, so a user writes
``threshold=0.9, refresh=4`` once and each piece receives its own. Two pieces declaring the same name would make
an option ambiguous: :func:`option_table` refuses such a configuration instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from dllm.cache import CACHES
from dllm.errors import DllmError
from dllm.registry import Option
from dllm.samplers.base import Policy
from dllm.samplers.registry import SCHEDULES, make_policy, policy_options

#: the pieces of a decoding configuration, in routing order
PIECES = ("policy", "cache", "block_schedule")


@dataclass(frozen=True)
class RoutedOptions:
    """Options split by the piece that takes them."""

    policy: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    block_schedule: dict[str, Any] = field(default_factory=dict)

    def merged(self) -> dict[str, Any]:
        return {**self.policy, **self.cache, **self.block_schedule}


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
    is an error naming both."""
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
    """Split ``options`` by piece. A name no piece declares is an error listing the allowed names. Values are
    checked by the piece that receives them when it is built."""
    table = option_table(policy, cache, block_schedule)
    unknown = sorted(set(options) - set(table))
    if unknown:
        what = f"policy {policy!r}" if isinstance(policy, str) else "this policy"
        raise DllmError(f"unknown option {unknown[0]!r} for {what} with cache {cache!r}"
                        f"{'' if block_schedule == 'fixed' else f' and block schedule {block_schedule!r}'}; "
                        f"allowed: {', '.join(sorted(table)) or 'none'}")
    parts: dict[str, dict[str, Any]] = {p: {} for p in PIECES}
    for key, value in options.items():
        parts[table[key][0]][key] = value
    return RoutedOptions(**parts)


def check_option_values(policy: str | Policy, cache: str, block_schedule: Any, options: Mapping[str, Any]) -> None:
    """Route ``options`` and check every value against its declaration, without building anything (for
    validating a whole run before any model work)."""
    table = option_table(policy, cache, block_schedule)
    route_options(policy, cache, block_schedule, options)
    for key, value in options.items():
        if value is not None:
            table[key][1].check(value)


def check_configuration(policy: str | Policy, cache: str, block_schedule: Any, options: Mapping[str, Any]
                        ) -> RoutedOptions:
    """Everything about a decoding configuration that needs no model and no lengths: the names of its pieces, the
    option names and values (their declarations), and the policy's rules across options (by building it). The
    CLI runs it before loading a checkpoint. Returns the routed options."""
    check_option_values(policy, cache, block_schedule, options)
    routed = route_options(policy, cache, block_schedule, options)
    make_policy(policy, **routed.policy)
    return routed


__all__ = ["PIECES", "RoutedOptions", "check_configuration", "check_option_values", "option_table", "route_options"]
