"""``dllm generate``: text out, with speed figures."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console

from dllm.cli.app import app
from dllm.cli.common import default_model_path, parse_options, render_prompt


@app.command("generate")
def generate_command(
    prompt: str = typer.Argument(..., help="Prompt text ('-' reads standard input)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint directory or hub id (default: the shipped tiny model)."),
    policy: str = typer.Option("lowconf", "--policy", "-p", help="Unmasking policy (see `dllm generate --list-policies`)."),
    gen_length: Optional[int] = typer.Option(None, "--gen-length", help="Tokens to generate (default: the checkpoint's, else 128)."),
    block_length: Optional[int] = typer.Option(None, "--block-length", help="Semi-autoregressive block length (default 32 if it divides gen-length)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total step budget of quota policies (default gen-length)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Confidence threshold in (0, 1] for threshold-based policies."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature (0 = greedy)."),
    cache: str = typer.Option("none", "--cache", help="KV cache: none, prefix, dual, delayed."),
    block_schedule: str = typer.Option("fixed", "--block-schedule", help="Block schedule: fixed or adaptive."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Extra policy/cache option key=value (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16, float16, float32 (default: bf16 on cuda, fp32 on cpu)."),
    chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Wrap the prompt in the model's chat template (default: on for instruct models)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text, token ids, nfe, tokens/s)."),
    stop_at_eos: bool = typer.Option(True, "--stop-at-eos/--no-stop-at-eos", help="Stop a sequence once its text is final."),
) -> None:
    """Generate text for PROMPT and print it with a one-line speed summary."""
    import dllm

    if prompt == "-":
        prompt = sys.stdin.read()
    if model is None:
        _warn_if_not_a_task_prompt(prompt)
    lm = dllm.load_model(model or default_model_path(), device=device, dtype=dtype)
    defaults = lm.generation_defaults
    gen_length = gen_length or defaults.get("gen_length", 128)
    if block_length is None:
        block_length = defaults.get("block_length") if gen_length == defaults.get("gen_length") else None
    if steps is None and gen_length == defaults.get("gen_length"):
        steps = defaults.get("steps")
    if chat is None:
        chat = bool(defaults.get("chat", "instruct" in lm.name_or_path.lower()))
    ids = render_prompt(lm, prompt, chat)
    options = parse_options(option)
    if threshold is not None:
        options["threshold"] = threshold
    out = dllm.generate(
        lm, [ids], policy=policy, gen_length=gen_length, block_length=block_length, steps=steps, cache=cache,
        block_schedule=block_schedule, temperature=temperature, seed=seed, stop_at_eos=stop_at_eos, **options,
    )
    text = out.texts[0] if out.texts else ""
    n_tokens = out.generated_counts()[0]
    tps = n_tokens / out.elapsed if out.elapsed > 0 else 0.0
    if as_json:
        print(json.dumps({
            "text": text, "token_ids": out.tokens[0].tolist(), "prompt_ids": ids, "nfe": out.nfe,
            "generated_tokens": n_tokens, "tokens_per_forward": out.tokens_per_forward, "seconds": out.elapsed,
            "tokens_per_second": tps, "policy": policy, "cache": cache, "gen_length": gen_length,
        }))
        return
    console = Console()
    console.print(text, markup=False, highlight=False)
    console.print(
        f"[dim]{policy} · cache {cache} · {n_tokens} tokens · NFE {out.nfe} · "
        f"{out.tokens_per_forward:.2f} tok/forward · {tps:.1f} tok/s · {out.elapsed:.2f} s (model load excluded)[/]"
    )


def _warn_if_not_a_task_prompt(prompt: str) -> None:
    """The shipped tiny model only knows the synthetic task formats: say so (on stderr) instead of letting a
    prompt like ``12+34=`` silently produce a wrong answer."""
    from dllm.evals.synthetic import PROMPT_EXAMPLES, prompt_family

    if prompt_family(prompt) is None:
        Console(stderr=True).print(
            f"[yellow]note:[/] the shipped tiny model only knows the synthetic task formats, e.g. "
            f"{', '.join(repr(p) for p in PROMPT_EXAMPLES[:5])}; {prompt!r} is not one of them "
            f"(pass --model for a real checkpoint)", markup=True, highlight=False, soft_wrap=True)
