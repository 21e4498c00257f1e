"""The stable Python API: ``load_model``, ``generate``, ``policies``, ``caches``, ``block_schedules``."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from dllm.cache import caches, make_cache
from dllm.compiled import accelerate_cache, accelerate_policy, check_compile_mode
from dllm.engine import GenerationOutput, as_prompt_list, denoise
from dllm.errors import DllmError
from dllm.models import DiffusionLM, load_model
from dllm.options import route_options
from dllm.samplers.base import Policy
from dllm.samplers.registry import SCHEDULES, make_policy, make_schedule, policies
from dllm.samplers.schedules import BlockSchedule

#: gen_length when neither the caller nor the checkpoint's generation defaults give one
DEFAULT_GEN_LENGTH = 128


def block_schedules() -> dict[str, str]:
    """Block schedule name -> one-line description."""
    return SCHEDULES.summaries()


def default_block_length(gen_length: int) -> int:
    """32 (Fast-dLLM's choice) when it divides gen_length, else a single block."""
    return 32 if gen_length % 32 == 0 else gen_length


def decoding_lengths(model: Any, gen_length: int | None = None, block_length: int | None = None,
                     steps: int | None = None) -> tuple[int, int, int]:
    """``(gen_length, block_length, steps)`` as ``dllm.generate`` and ``dllm generate`` use them: what the caller
    gives, else the checkpoint's generation defaults (``generation_config.json``, key ``dllm``), else
    gen_length 128, block 32 when it divides gen_length (else one block), steps = gen_length. The checkpoint's
    block length and steps apply only at its own gen_length."""
    shipped = dict(getattr(model, "generation_defaults", None) or {})
    g = _positive_int("gen_length", shipped.get("gen_length", DEFAULT_GEN_LENGTH) if gen_length is None else gen_length)
    own = g == shipped.get("gen_length")
    if block_length is None:
        block_length = shipped["block_length"] if own and "block_length" in shipped else default_block_length(g)
    if steps is None:
        steps = shipped["steps"] if own and "steps" in shipped else g
    return g, _positive_int("block_length", block_length), _positive_int("steps", steps)


def default_continuous(model: Any) -> bool:
    """Continuous batching pays where a forward of many rows costs about one of few (a GPU), not on a CPU."""
    device = getattr(model, "device", None)
    return getattr(device, "type", "cpu") == "cuda"


def default_chat(model: Any) -> bool:
    """Whether text prompts go through the chat template by default: the checkpoint's ``chat`` generation
    default, else whether its name says "instruct" (as the references run LLaDA-Instruct)."""
    shipped = getattr(model, "generation_defaults", None) or {}
    if "chat" in shipped:
        return bool(shipped["chat"])
    return "instruct" in str(getattr(model, "name_or_path", "")).lower()


def chat_prompt(model: Any, text: str) -> str:
    """``text`` as one user message of the model's chat template, generation prompt added (as text)."""
    tok = model.tokenizer
    if tok is None or not getattr(tok, "chat_template", None):
        raise DllmError(f"model {model.name_or_path!r} has no chat template; use --no-chat")
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def encode_prompt(model: Any, prompt: str, chat: bool | None = None) -> list[int]:
    """Token ids of one text prompt; with ``chat`` (default: :func:`default_chat`) the model's chat template wraps
    it as one user message (rendered to text, then tokenized without extra special tokens, as the reference
    scripts do)."""
    tok = model.tokenizer
    if tok is None:
        raise DllmError(f"model {model.name_or_path!r} ships no tokenizer; text prompts need one")
    if default_chat(model) if chat is None else chat:
        prompt = chat_prompt(model, prompt)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if not ids:
        raise DllmError("empty prompt")
    return list(ids)


def generate(
    model: DiffusionLM,
    input_ids: Any,
    policy: str | Policy = "lowconf",
    gen_length: int | None = None,
    block_length: int | None = None,
    steps: int | None = None,
    cache: str = "none",
    block_schedule: str | BlockSchedule = "fixed",
    temperature: float | None = None,
    seed: int | Sequence[int] | None = 0,
    attention_mask: torch.Tensor | None = None,
    stop_at_eos: bool = True,
    trace: bool = False,
    chat: bool | None = None,
    batch_size: int | None = None,
    continuous: bool | None = None,
    compile: str = "none",
    **options: Any,
) -> GenerationOutput:
    """Generate ``gen_length`` tokens after each prompt with an unmasking ``policy``.

    ``input_ids``: a [B, L] tensor (with ``attention_mask`` for padded rows), a list of id lists (ragged is
    fine), or text (one string or a list); text goes through the chat template when ``chat`` (default: the
    checkpoint's, as ``dllm generate``). Lengths default as in :func:`decoding_lengths` (the checkpoint's own
    decoding settings first). ``steps`` is the total step budget of quota policies, spread evenly over the
    blocks. ``options`` go to whichever of the policy, the cache and the block schedule declares them
    (``dllm.options.route_options``; e.g. ``threshold=0.9``, ``refresh=8``); an option nobody declares is an
    error listing what is allowed. ``stop_at_eos`` ends a row once an end token is decided with everything
    before it decided (its text is then final); the rest of the row is filled with EOS and costs no forwards.

    ``batch_size``: decode at most this many prompts at once (default: all in one batch). With ``continuous``
    a row that finishes hands its slot to the next prompt at once (continuous batching, ``dllm/batching.py``);
    ``continuous=False`` runs consecutive static batches. Default (``None``): continuous on CUDA, static on a CPU,
    where a forward costs rows x width and refilling measured 0.74-1.05x of static (``benchmarks/batching.py``).
    Tokens and ``seq_nfe`` do not depend on it; ``nfe`` (batched calls) and ``elapsed`` are those of the call.

    ``compile``: ``"none"``, ``"compile"`` (torch.compile) or ``"cudagraph"`` (cached forwards replayed from CUDA
    graphs, same tokens bit for bit); see ``dllm/compiled.py``.
    """
    if batch_size is not None:
        batch_size = _positive_int("batch_size", batch_size)
    if continuous is None:
        continuous = default_continuous(model)
    if not isinstance(continuous, bool):
        raise DllmError(f"continuous must be true or false, got {continuous!r}")
    if model.special is None:
        raise DllmError("model has no special-token ids; load it with dllm.load_model")
    gen_length, block_length, steps = decoding_lengths(model, gen_length, block_length, steps)
    routed = route_options(policy, cache, block_schedule, options)
    policy, cache, block_schedule = routed.names  # a preset name (dllm.samplers.presets) expanded
    policy_opts = dict(routed.policy)
    if temperature is not None:
        if isinstance(policy, Policy):
            raise DllmError("temperature given together with a ready Policy object; set it on the policy")
        policy_opts["temperature"] = temperature
    pol = accelerate_policy(make_policy(policy, **policy_opts), check_compile_mode(compile, model.device))
    if isinstance(block_schedule, str):
        schedule = make_schedule(block_schedule, gen_length, block_length, steps, **routed.block_schedule)
    else:
        schedule = block_schedule
    if hasattr(schedule, "bind"):  # schedules that read the tokenizer (e.g. AdaBlock's delimiters)
        schedule.bind(model)

    def cache_factory(key_mask, positions, gen_start, gen_end):
        return accelerate_cache(make_cache(cache, model, key_mask, positions, gen_start, gen_end, **routed.cache), compile)

    prompts = as_prompt_list(model, input_ids, attention_mask, encode=lambda text: encode_prompt(model, text, chat))
    return denoise(
        model, prompts, pol, schedule, cache_factory, gen_length,
        temperature=float(pol.options.get("temperature", 0.0)), seed=seed, stop_at_eos=stop_at_eos, trace=trace,
        max_iterations=4 * gen_length + steps + 64, slots=batch_size, continuous=continuous,
    )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise DllmError(f"{name} must be a positive integer, got {value!r}")
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise DllmError(f"{name} must be a positive integer, got {value!r}") from None
    if v <= 0 or v != value:
        raise DllmError(f"{name} must be a positive integer, got {value!r}")
    return v


__all__ = ["generate", "load_model", "policies", "caches", "block_schedules", "default_block_length",
           "chat_prompt", "decoding_lengths", "default_chat", "encode_prompt", "DEFAULT_GEN_LENGTH"]
