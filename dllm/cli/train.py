"""``dllm train-tiny``: train a small LLaDA/Dream-format model on the synthetic suite (CPU is enough)."""

from __future__ import annotations

from typing import Optional

import typer

from dllm.cli.app import app
from dllm.cli.common import ensure_appendable_file, ensure_output_dir
from dllm.errors import DllmError


@app.command("train-tiny")
def train_tiny_command(
    kind: str = typer.Option("llada", "--kind", help="Checkpoint format: llada or dream."),
    out: str = typer.Option("runs/tiny-llada", "--out", help="Output directory (best checkpoint; last weights in OUT/last)."),
    steps: int = typer.Option(3000, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(128, "--batch-size", help="Examples per step."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (AdamW, warmup then cosine decay)."),
    warmup: int = typer.Option(100, "--warmup", help="Linear warmup steps."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, data order and masking."),
    hidden: int = typer.Option(192, "--hidden", help="Model width."),
    layers: int = typer.Option(4, "--layers", help="Transformer layers."),
    heads: int = typer.Option(4, "--heads", help="Attention heads (hidden must divide evenly)."),
    families: Optional[str] = typer.Option(None, "--families", help="Comma-separated task families (default: all)."),
    eval_every: int = typer.Option(250, "--eval-every", help="Steps between held-out evaluations (the best is kept)."),
    eval_per_family: int = typer.Option(20, "--eval-per-family", help="Held-out test examples per family at each evaluation."),
    weighting: str = typer.Option("llada", "--weighting", help="Loss weighting: llada (CE/t, the paper's) or mean (mean CE over masked tokens, lower noise)."),
    stratified_t: bool = typer.Option(False, "--stratified-t/--iid-t", help="Spread each batch's mask ratios t evenly over (eps, 1)."),
    family_weights: Optional[str] = typer.Option(None, "--family-weights", help="Sampling weights, e.g. gsm-mini=0.5,add=2 (default: uniform)."),
    train_pool: int = typer.Option(50000, "--train-pool", help="Training examples drawn per family."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop after this many seconds (the LR schedule follows the clock)."),
    threads: int = typer.Option(2, "--threads", help="CPU threads for torch."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Continue from this checkpoint directory."),
    mix_floor: float = typer.Option(0.15, "--mix-floor", help="Adaptive family mix: weight = base * (floor + held-out error); a higher floor forgets solved families less."),
    grow_layers: int = typer.Option(0, "--grow-layers", help="With --init-from: first add this many blocks that start as exact no-ops."),
    log_file: Optional[str] = typer.Option(None, "--log-file", help="Append plain log lines here instead of a progress bar."),
) -> None:
    """Train a tiny masked-diffusion model and save the best checkpoint to OUT (loads with dllm.load_model)."""
    from dllm.evals.synthetic import FAMILIES
    from dllm.models.loading import resolve_device
    from dllm.training.diffusion import TrainConfig, train_tiny

    fams = tuple(f.strip() for f in families.split(",") if f.strip()) if families is not None else FAMILIES
    if not fams:
        raise DllmError("--families is empty; name at least one of: " + ", ".join(FAMILIES))
    if time_limit is not None and time_limit <= 0:
        raise DllmError(f"--time-limit must be > 0 seconds, got {time_limit}")
    weights = None
    if family_weights:
        weights = {}
        for pair in family_weights.split(","):
            name, sep, value = pair.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                raise DllmError(f"--family-weights entry {pair!r} must look like family=number") from None
            if not sep:
                raise DllmError(f"--family-weights entry {pair!r} must look like family=number")
    if train_pool < 1:
        raise DllmError(f"--train-pool must be a positive integer, got {train_pool}")
    dev = resolve_device(device)
    ensure_output_dir(out)
    if log_file:
        ensure_appendable_file(log_file, "--log-file")
    cfg = TrainConfig(
        kind=kind, out=out, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, seed=seed, hidden=hidden, layers=layers,
        heads=heads, families=fams, eval_every=eval_every, eval_per_family=eval_per_family, time_limit=time_limit,
        threads=threads, device=str(dev), init_from=init_from, grow_layers=grow_layers, mix_floor=mix_floor, log_file=log_file, weighting=weighting,
        stratified_t=stratified_t, family_weights=weights, train_pool=train_pool,
    )
    path = train_tiny(cfg)
    typer.echo(f"saved {path}")
