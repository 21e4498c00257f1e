"""``dllm models`` and ``dllm policies``: what this installation knows, read from the plug-in registries."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from dllm.cli.app import app


@app.command("models")
def models_command() -> None:
    """List supported model kinds, known hub checkpoints and the shipped tiny models."""
    from dllm.assets import shipped_models
    from dllm.models import KNOWN_CHECKPOINTS, MODELS
    from dllm.models.loading import read_config

    console = Console()
    kinds = Table(title="model kinds (config.json model_type)")
    kinds.add_column("model_type")
    kinds.add_column("implementation")
    kinds.add_column("logit shift")
    kinds.add_column("what it is")
    for entry in MODELS.entries():
        cls = entry.factory
        kinds.add_row(entry.name, f"{cls.__module__}.{cls.__name__}", "yes" if cls.logit_shift else "no", entry.summary)
    console.print(kinds)
    known = Table(title="known checkpoints (hub id or a local copy)")
    known.add_column("checkpoint")
    known.add_column("kind")
    for hub_id, kind in KNOWN_CHECKPOINTS.items():
        known.add_row(hub_id, kind)
    for name, path in shipped_models().items():
        known.add_row(f"{path}  (shipped: {name})", str(read_config(path)["model_type"]).lower())
    console.print(known)


def _fmt_default(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return "-" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))


def plugin_listing() -> dict[str, list[dict]]:
    """Every plug-in of every kind with its declared options, from the registries (the same declarations
    validation uses): ``{kind: [{"name", "summary", "options": [{"name", "default", "allowed", "help"}]}]}``."""
    from dllm.cache import CACHES
    from dllm.evals.bench import BENCHMARKS
    from dllm.options import option_table, resolve_preset
    from dllm.samplers.registry import COMMON, POLICIES, PRESETS, SCHEDULES

    def entries(registry) -> list[dict]:
        return [{"name": e.name, "summary": e.summary, "options": [o.describe() for o in e.options]}
                for e in registry.entries()]

    def preset(entry) -> dict:
        """A preset's bundle, and the options it sets with its values as their defaults (overridable)."""
        bundle = entry.build()
        table = option_table(entry.name)
        values = resolve_preset(entry.name)[3]
        return {"name": entry.name, "summary": f"{entry.summary} [{bundle.describe()}]",
                "options": [table[k][1].describe() for k in values]}

    common = [{"name": "(every policy)", "summary": g.summary, "options": [o.describe() for o in g.options]}
              for g in COMMON]
    return {"policies": entries(POLICIES) + common, "presets": [preset(e) for e in PRESETS.entries()],
            "caches": entries(CACHES), "block schedules": entries(SCHEDULES), "benchmarks": entries(BENCHMARKS)}


@app.command("policies")
def policies_command(
    as_json: bool = typer.Option(False, "--json", help="Print the listing as one JSON object."),
) -> None:
    """List unmasking policies, KV caches, block schedules and benchmarks, each with its options (default,
    allowed values, meaning). Options are passed as --option key=value (or keyword arguments in Python)."""
    listing = plugin_listing()
    if as_json:
        print(json.dumps(listing, default=str))
        return
    console = Console()
    flags = {"policies": "--policy", "presets": "--policy; a policy + options + cache + schedule, options override",
             "caches": "--cache", "block schedules": "--block-schedule", "benchmarks": "dllm eval --bench"}
    for kind, items in listing.items():
        table = Table(title=f"{kind} ({flags[kind]})", show_lines=True)
        table.add_column("name", no_wrap=True)
        table.add_column("what it does")
        table.add_column("options: name = default (allowed) meaning")
        for item in items:
            opts = "\n".join(f"{o['name']} = {_fmt_default(o['default'])} ({o['allowed']}) {o['help']}"
                             for o in item["options"]) or "-"
            table.add_row(item["name"], item["summary"], opts)
        console.print(table)
