"""``dllm models`` and ``dllm policies``: what this installation knows."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dllm.cli.app import app


@app.command("models")
def models_command() -> None:
    """List supported model kinds, known hub checkpoints and the shipped tiny models."""
    from dllm.assets import shipped_models
    from dllm.models import KNOWN_CHECKPOINTS, MODEL_CLASSES
    from dllm.models.loading import read_config

    console = Console()
    kinds = Table(title="model kinds (config.json model_type)")
    kinds.add_column("model_type")
    kinds.add_column("implementation")
    kinds.add_column("logit shift")
    for name, cls in MODEL_CLASSES.items():
        kinds.add_row(name, f"{cls.__module__}.{cls.__name__}", "yes" if cls.logit_shift else "no")
    console.print(kinds)
    known = Table(title="known checkpoints (hub id or a local copy)")
    known.add_column("checkpoint")
    known.add_column("kind")
    for hub_id, kind in KNOWN_CHECKPOINTS.items():
        known.add_row(hub_id, kind)
    for name, path in shipped_models().items():
        known.add_row(f"{path}  (shipped: {name})", str(read_config(path)["model_type"]).lower())
    console.print(known)


@app.command("policies")
def policies_command() -> None:
    """List unmasking policies, KV caches and block schedules."""
    import dllm

    console = Console()
    table = Table(title="policies (--policy)")
    table.add_column("name")
    table.add_column("what it does")
    for name, summary in dllm.policies().items():
        table.add_row(name, summary)
    console.print(table)
    caches = Table(title="caches (--cache)")
    caches.add_column("name")
    caches.add_column("what it does")
    for name, summary in dllm.caches().items():
        caches.add_row(name, summary)
    console.print(caches)
    console.print(f"block schedules (--block-schedule): {', '.join(dllm.BLOCK_SCHEDULES)}")
