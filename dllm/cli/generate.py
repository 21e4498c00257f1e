"""``dllm generate``: text out, with a one-line summary that shows what parallel decoding buys.

The default policy is a parallel one (``threshold`` 0.9: commit every position whose confidence clears 0.9,
at least one per step), and the summary compares its forward count (NFE) with one-token-per-step decoding of
the same prompt (``lowconf`` with steps = gen-length, the baseline every paper reports against), e.g.
``NFE 3 vs 16 one-token-per-step (5.3x fewer forwards)``. NFE is exact and machine independent; the tok/s
figure is one timed call after an untimed warm-up call, so it excludes one-off start-up costs but still
moves with the load on the machine.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

import typer
from rich.console import Console

from dllm.cli.app import app
from dllm.cli.common import choices, default_model_path, parse_options
from dllm.errors import DllmError
from dllm.options import check_configuration

DEFAULT_POLICY = "threshold"
#: threshold used when the default policy runs without --threshold (Fast-dLLM's setting)
DEFAULT_THRESHOLD = 0.9
#: the one-token-per-step reference the summary compares against (run with steps = gen_length)
BASELINE_POLICY = "lowconf"
#: models below this many parameters run on one CPU thread unless OMP_NUM_THREADS says otherwise: their
#: matrices are too small to split, and extra threads only fight other processes for the cores
SMALL_MODEL_PARAMS = 50_000_000


@app.command("generate")
def generate_command(
    prompt: str = typer.Argument(..., help="Prompt text ('-' reads standard input; one trailing newline is dropped)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint directory or hub id (default: the shipped tiny model)."),
    policy: str = typer.Option(DEFAULT_POLICY, "--policy", "-p", help=f"Unmasking policy: {choices('policy')} (default {DEFAULT_POLICY} {DEFAULT_THRESHOLD}; options: `dllm policies`)."),
    gen_length: Optional[int] = typer.Option(None, "--gen-length", help="Tokens to generate, >= 1 (default: the checkpoint's, else 128)."),
    block_length: Optional[int] = typer.Option(None, "--block-length", help="Semi-autoregressive block length (default 32 if it divides gen-length)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total step budget of quota policies (default gen-length)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help=f"Confidence threshold in (0, 1] for threshold-based policies (default {DEFAULT_THRESHOLD} for {DEFAULT_POLICY})."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature (0 = greedy)."),
    cache: str = typer.Option("none", "--cache", help=f"KV cache: {choices('cache')}."),
    block_schedule: str = typer.Option("fixed", "--block-schedule", help=f"Block schedule: {choices('block schedule')}."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Extra policy/cache option key=value (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16, float16, float32 (default: bf16 on cuda, fp32 on cpu)."),
    chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Wrap the prompt in the model's chat template (default: on for instruct models)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text, token ids, nfe, baseline nfe, tokens/s)."),
    stop_at_eos: bool = typer.Option(True, "--stop-at-eos/--no-stop-at-eos", help="Stop a sequence once its text is final."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also decode one token per step (lowconf, steps = gen-length) to compare NFE; it costs gen-length forwards."),
    warmup: bool = typer.Option(True, "--warmup/--no-warmup", help="One untimed generate call before the timed one, so tok/s excludes start-up costs."),
) -> None:
    """Generate text for PROMPT and print it with a one-line summary: NFE against one-token-per-step decoding
    of the same prompt, tokens per forward and tok/s (one timed call after an untimed warm-up; model load
    excluded). Models under 50M parameters run on one CPU thread unless OMP_NUM_THREADS is set."""
    import dllm

    if gen_length is not None and gen_length < 1:
        raise DllmError(f"--gen-length must be a positive integer, got {gen_length}")
    for name, value in (("--block-length", block_length), ("--steps", steps)):
        if value is not None and value < 1:
            raise DllmError(f"{name} must be a positive integer, got {value}")
    if threshold is not None and not 0 < threshold <= 1:
        raise DllmError(f"--threshold {threshold} is outside (0, 1]")
    options = parse_options(option)
    if threshold is not None:
        options["threshold"] = threshold
    elif policy == DEFAULT_POLICY and "threshold" not in options:
        options["threshold"] = DEFAULT_THRESHOLD
    # names, options and values first: a typo should not cost loading an 8B checkpoint
    check_configuration(policy, cache, block_schedule,
                        {**options, **({} if temperature is None else {"temperature": temperature})})
    prompt = read_prompt(prompt)
    if model is None:
        _warn_if_not_a_task_prompt(prompt)

    lm = dllm.load_model(model or default_model_path(), device=device, dtype=dtype)
    threads = limit_cpu_threads(lm)
    gen_length, block_length, steps = dllm.decoding_lengths(lm, gen_length, block_length, steps)
    ids = dllm.encode_prompt(lm, prompt, chat)  # chat None: the checkpoint's default, as dllm.generate

    def run() -> Any:
        return dllm.generate(
            lm, [ids], policy=policy, gen_length=gen_length, block_length=block_length, steps=steps, cache=cache,
            block_schedule=block_schedule, temperature=temperature, seed=seed, stop_at_eos=stop_at_eos, **options,
        )

    if warmup:
        run()  # untimed: first-call allocations, lazy initialisation, kernel compilation
    out = run()
    base_nfe = None
    same_as_baseline = (policy == BASELINE_POLICY and steps == gen_length and cache == "none"
                        and block_schedule == "fixed" and not options)
    if baseline and same_as_baseline:
        base_nfe = out.nfe
    elif baseline:
        base = dllm.generate(
            lm, [ids], policy=BASELINE_POLICY, gen_length=gen_length, block_length=block_length, steps=gen_length,
            temperature=temperature, seed=seed, stop_at_eos=stop_at_eos,
        )
        base_nfe = base.nfe

    text = out.texts[0] if out.texts else ""
    n_tokens = out.generated_counts()[0]
    tps = n_tokens / out.elapsed if out.elapsed > 0 else 0.0
    label = policy + (f" {options['threshold']}" if "threshold" in options else "")
    if as_json:
        print(json.dumps({
            "text": text, "token_ids": out.tokens[0].tolist(), "prompt_ids": ids, "nfe": out.nfe,
            "baseline_nfe": base_nfe, "baseline_policy": BASELINE_POLICY if baseline else None,
            "generated_tokens": n_tokens, "tokens_per_forward": out.tokens_per_forward, "seconds": out.elapsed,
            "tokens_per_second": tps, "warmup": warmup, "threads": threads, "policy": policy,
            "options": options, "cache": cache, "gen_length": gen_length,
        }))
        return
    console = Console()
    console.print(text, markup=False, highlight=False)
    console.print(
        f"[dim]{label} · cache {cache} · {n_tokens} tokens · {nfe_comparison(out.nfe, base_nfe)} · "
        f"{out.tokens_per_forward:.2f} tok/forward · {tps:.1f} tok/s · {out.elapsed:.3f} s "
        f"({'after a warm-up call, ' if warmup else ''}model load excluded)[/]",
        highlight=False, soft_wrap=True,
    )


def nfe_comparison(nfe: int, baseline_nfe: int | None) -> str:
    """``NFE 3 vs 16 one-token-per-step (5.3x fewer forwards)``; just ``NFE 3`` without a baseline."""
    if baseline_nfe is None:
        return f"NFE {nfe}"
    if nfe <= 0:
        return f"NFE {nfe} vs {baseline_nfe} one-token-per-step"
    ratio = baseline_nfe / nfe
    if ratio >= 1:
        verdict = f"{ratio:.1f}x fewer forwards"
    else:
        verdict = f"{nfe / baseline_nfe:.1f}x more forwards"
    return f"NFE {nfe} vs {baseline_nfe} one-token-per-step ({verdict})"


def read_prompt(prompt: str) -> str:
    """The prompt as text: ``-`` reads standard input (strict UTF-8, one trailing newline dropped, as ``echo``
    adds one); a prompt that is not valid UTF-8 is a one-line error rather than a tokenizer crash."""
    if prompt == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text stream without bytes underneath (e.g. replaced in tests)
            prompt = sys.stdin.read()
        else:
            data = stream.read()
            try:
                prompt = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DllmError(f"standard input is not UTF-8 text: byte {data[exc.start]:#04x} at offset {exc.start}") from None
        if prompt.endswith("\r\n"):
            prompt = prompt[:-2]
        elif prompt.endswith("\n"):
            prompt = prompt[:-1]
        return prompt
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        # POSIX hands undecodable argv bytes to Python as lone surrogates (surrogateescape)
        raw = os.fsencode(prompt[exc.start:exc.end])[:1]
        byte = f"byte {raw[0]:#04x}" if raw else "a character"
        raise DllmError(f"the prompt is not UTF-8 text: {byte} at character {exc.start}") from None
    return prompt


def limit_cpu_threads(model: Any) -> int:
    """One torch thread for a small model on CPU unless the user set OMP_NUM_THREADS; returns the count used.
    A tiny model's matrices are too small to split across threads, and on a busy machine the default pool
    (one thread per core) waits on cores other processes hold: the same 16 forwards of the shipped model
    were measured at 0.07-13 s on a shared 2-core machine."""
    import torch

    if model.device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def _warn_if_not_a_task_prompt(prompt: str) -> None:
    """The shipped tiny model only knows the synthetic task formats: say so (on stderr) instead of letting a
    prompt like ``12+34=`` silently produce a wrong answer."""
    from dllm.evals.synthetic import PROMPT_EXAMPLES, prompt_family

    if prompt_family(prompt) is None:
        Console(stderr=True).print(
            f"[yellow]note:[/] the shipped tiny model only knows the synthetic task formats, e.g. "
            f"{', '.join(repr(p) for p in PROMPT_EXAMPLES[:5])}; {prompt!r} is not one of them "
            f"(pass --model for a real checkpoint)", markup=True, highlight=False, soft_wrap=True)
