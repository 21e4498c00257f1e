"""The stable Python API: ``load_model``, ``generate``, ``policies``."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from dllm.cache import cache_options, caches, make_cache
from dllm.engine import GenerationOutput, _as_prompt_list, denoise
from dllm.errors import DllmError, check_choice
from dllm.models import DiffusionLM, load_model
from dllm.samplers.base import Policy
from dllm.samplers.registry import make_policy, policies, policy_spec
from dllm.samplers.schedules import BlockSchedule, FixedBlocks

BLOCK_SCHEDULES = ("fixed", "adaptive")


def _schedule_factory(name: str):
    check_choice("block schedule", name, BLOCK_SCHEDULES)
    if name == "fixed":
        return FixedBlocks
    from dllm.samplers.adaptive import AdaptiveBlocks

    return AdaptiveBlocks


def _params(fn: Any, skip: Sequence[str] = ()) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p not in skip]


def default_block_length(gen_length: int) -> int:
    """32 (Fast-dLLM's choice) when it divides gen_length, else a single block."""
    return 32 if gen_length % 32 == 0 else gen_length


def generate(
    model: DiffusionLM,
    input_ids: Any,
    policy: str | Policy = "lowconf",
    gen_length: int = 128,
    block_length: int | None = None,
    steps: int | None = None,
    cache: str = "none",
    block_schedule: str | BlockSchedule = "fixed",
    temperature: float | None = None,
    seed: int | Sequence[int] | None = 0,
    attention_mask: torch.Tensor | None = None,
    stop_at_eos: bool = True,
    trace: bool = False,
    **options: Any,
) -> GenerationOutput:
    """Generate ``gen_length`` tokens after each prompt with an unmasking ``policy``.

    ``input_ids``: a [B, L] tensor (with ``attention_mask`` for padded rows), a list of id lists (ragged is
    fine) or text. ``steps`` (default ``gen_length``) is the total step budget of quota policies, spread
    evenly over ``gen_length / block_length`` blocks (default block 32 when it divides gen_length).
    ``options`` go to whichever of the policy, the cache and the block schedule accepts them (e.g.
    ``threshold=0.9``, ``refresh=8``); an option nobody accepts is an error listing what is allowed.
    ``stop_at_eos`` ends a row once an end token is decided with everything before it decided (its text is
    then final); the rest of the row is filled with EOS and costs no more forwards.
    """
    if model.special is None:
        raise DllmError("model has no special-token ids; load it with dllm.load_model")
    gen_length = _positive_int("gen_length", gen_length)
    block_length = default_block_length(gen_length) if block_length is None else _positive_int("block_length", block_length)
    steps = gen_length if steps is None else _positive_int("steps", steps)
    check_choice("cache", cache, list(caches()))

    # Route options to the pieces that accept them.
    policy_opts = policy_spec(policy).options() if isinstance(policy, str) else []
    cache_opts = cache_options(cache)
    sched_opts = [] if not isinstance(block_schedule, str) else _params(_schedule_factory(block_schedule), ("gen_length", "block_length", "steps"))
    allowed = set(policy_opts) | set(cache_opts) | set(sched_opts)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DllmError(f"unknown option {unknown[0]!r}; allowed for this policy/cache/schedule: {', '.join(sorted(allowed)) or 'none'}")
    if temperature is not None:
        if "temperature" not in policy_opts and isinstance(policy, str):
            raise DllmError(f"policy {policy!r} takes no temperature")
        options["temperature"] = temperature
    pol = make_policy(policy, **{k: v for k, v in options.items() if k in policy_opts})

    if isinstance(block_schedule, str):
        schedule = _schedule_factory(block_schedule)(
            gen_length=gen_length, block_length=block_length, steps=steps, **{k: v for k, v in options.items() if k in sched_opts}
        )
    else:
        schedule = block_schedule
    if hasattr(schedule, "bind"):  # schedules that read the tokenizer (e.g. AdaBlock's delimiters)
        schedule.bind(model)
    copts = {k: v for k, v in options.items() if k in cache_opts}

    def cache_factory(key_mask, positions, gen_start, gen_end):
        return make_cache(cache, model, key_mask, positions, gen_start, gen_end, **copts)

    prompts = _as_prompt_list(model, input_ids, attention_mask)
    return denoise(
        model, prompts, pol, schedule, cache_factory, gen_length,
        temperature=float(pol.options.get("temperature", 0.0)), seed=seed, stop_at_eos=stop_at_eos, trace=trace,
        max_iterations=4 * gen_length + steps + 64,
    )


def _positive_int(name: str, value: Any) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise DllmError(f"{name} must be a positive integer, got {value!r}") from None
    if v <= 0 or v != value:
        raise DllmError(f"{name} must be a positive integer, got {value!r}")
    return v


__all__ = ["generate", "load_model", "policies", "caches", "default_block_length", "BLOCK_SCHEDULES"]
