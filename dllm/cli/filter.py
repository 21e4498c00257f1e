"""``dllm train-filter``: train a Learn2PD filter for a model from one-token-per-step decoding traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dllm.cli.app import app
from dllm.errors import DllmError


def _read_prompts(path: str) -> list[str]:
    """One prompt per line (``.txt``) or JSON lines with a ``prompt`` (or ``question``/``text``) field."""
    from dllm.cli.common import read_text_file

    p = Path(path)
    if not p.is_file():
        raise DllmError(f"prompts file {path!r} does not exist")
    lines = [ln for ln in read_text_file(path, "prompts file").splitlines() if ln.strip()]
    if p.suffix in (".jsonl", ".json"):
        out = []
        for i, ln in enumerate(lines, 1):
            try:
                row = json.loads(ln)
            except json.JSONDecodeError:
                raise DllmError(f"{path}:{i} is not a JSON object") from None
            text = next((row.get(k) for k in ("prompt", "question", "text") if isinstance(row, dict) and row.get(k)), None)
            if not isinstance(text, str):
                raise DllmError(f"{path}:{i} has no 'prompt', 'question' or 'text' string field")
            out.append(text)
        lines = out
    if not lines:
        raise DllmError(f"prompts file {path!r} is empty")
    return lines


def _weights_digest(directory: Path) -> str:
    """sha256 over the checkpoint's safetensors files: says which weights a filter was trained for."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(directory.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


@app.command("train-filter")
def train_filter_command(
    model: Optional[str] = typer.Argument(None, help="Checkpoint directory or hub id (default: the shipped tiny model)."),
    out: str = typer.Option(..., "--out", "-o", help="Output directory for filter.safetensors + filter_config.json."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompt file (.txt one per line, or .jsonl with 'prompt'); default: the synthetic train split."),
    n_prompts: int = typer.Option(400, "--n-prompts", help="Prompts to trace (synthetic: spread over the families; file: the first N)."),
    gen_length: Optional[int] = typer.Option(None, "--gen-length", help="Generated tokens per prompt (default: synthetic ANSWER_LENGTH, else 256)."),
    block_length: Optional[int] = typer.Option(None, "--block-length", help="Block length = filter input size (default: 32, or gen-length if smaller)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Prompts decoded together while tracing."),
    chat: bool = typer.Option(False, "--chat/--no-chat", help="Wrap prompts in the model's chat template."),
    trajectory: str = typer.Option("oracle", "--trajectory", help="Features along the EGP 'oracle' replay (as the reference) or the 'baseline' trace."),
    hidden: int = typer.Option(32, "--hidden", help="Filter hidden size (reference: 32)."),
    layers: int = typer.Option(2, "--layers", help="Filter linear layers: 1, 2 (reference) or 4."),
    iterations: int = typer.Option(3000, "--iterations", help="Full-batch AdamW iterations (early stop on validation loss)."),
    lr: float = typer.Option(3e-3, "--lr", help="AdamW learning rate (reference: 3e-3)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of prompts held out for validation."),
    threshold_rule: str = typer.Option("reference", "--threshold-rule", help="Stored threshold: 'reference' (0.96), 'worst-group' (every synthetic family reaches --target-precision) or 'pooled'."),
    target_precision: float = typer.Option(0.99, "--target-precision", help="Validation precision the worst-group and pooled rules ask for."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split and initialisation."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Model dtype for tracing (default: bf16 on cuda, fp32 on cpu)."),
) -> None:
    """Trace the one-token-per-step baseline on prompts, label each position "prediction == final token",
    train the Learn2PD filter with BCE and save it to OUT (use it with --policy learnedfilter -o filter_path=OUT)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    import dllm
    from dllm.api import encode_prompt
    from dllm.cli.common import default_model_path, ensure_output_dir
    from dllm.errors import check_choice
    from dllm.evals.synthetic import ANSWER_LENGTH, FAMILIES, load_split
    from dllm.samplers.learned import LAYER_CHOICES, save_filter
    from dllm.training.filter import THRESHOLD_RULES, TRAJECTORIES, collect_filter_data, train_filter

    check_choice("--trajectory", trajectory, TRAJECTORIES)
    check_choice("--threshold-rule", threshold_rule, THRESHOLD_RULES)

    for name, value in (("--n-prompts", n_prompts), ("--batch-size", batch_size), ("--hidden", hidden),
                        ("--iterations", iterations)):
        if value <= 0:
            raise DllmError(f"{name} must be positive, got {value}")
    if layers not in LAYER_CHOICES:
        raise DllmError(f"--layers {layers} not supported; choose one of: {', '.join(map(str, LAYER_CHOICES))}")
    if not 0 < target_precision <= 1:
        raise DllmError(f"--target-precision {target_precision} is outside (0, 1]")
    if gen_length is None:
        gen_length = ANSWER_LENGTH if prompts is None else 256
    if block_length is None:
        block_length = min(32, gen_length)
    if gen_length <= 0 or block_length <= 0 or gen_length % block_length:
        raise DllmError(f"--gen-length {gen_length} must be a positive multiple of --block-length {block_length}")

    ensure_output_dir(out)
    console = Console(stderr=True)
    model_path = model or default_model_path()
    local = Path(model_path).is_dir()
    digest = _weights_digest(Path(model_path)) if local else None  # before loading: the weights actually used
    lm = dllm.load_model(model_path, device=device, dtype=dtype)
    if prompts is None:
        per_family = max(1, -(-n_prompts // len(FAMILIES)))
        examples = load_split("train", per_family, seed=seed)[:n_prompts]
        texts, groups = [ex.prompt for ex in examples], [ex.family for ex in examples]
        source = f"synthetic train split ({len(texts)} prompts)"
    else:
        if threshold_rule == "worst-group":
            raise DllmError("--threshold-rule worst-group needs the synthetic prompts' families (no --prompts)")
        texts, groups = _read_prompts(prompts)[:n_prompts], None
        source = f"{prompts} ({len(texts)} prompts)"
    ids = [encode_prompt(lm, t, chat) for t in texts]

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"tracing ({trajectory})", total=len(ids), info="")
        data = collect_filter_data(lm, ids, gen_length, block_length, batch_size=batch_size, trajectory=trajectory,
                                   progress=lambda done, total: progress.update(task, completed=done), groups=groups)
        progress.update(task, info=f"{len(data)} rows, {data.info['positions']} positions, "
                                   f"{data.info['positive_rate']:.0%} final")
        tr = progress.add_task("training filter", total=iterations, info="")

        def report(it: int, total: int, loss: float, vloss: float) -> None:
            if it % 25 == 0 or it == total:
                progress.update(tr, completed=it, info=f"loss {loss:.4f} · val {vloss:.4f}")

        module, stats = train_filter(data, hidden=hidden, layers=layers, iterations=iterations, lr=lr,
                                     val_fraction=val_fraction, seed=seed, target_precision=target_precision,
                                     threshold_rule=threshold_rule,
                                     device=lm.device, progress=report)
        progress.update(tr, completed=iterations, info=f"best val {stats['val_loss']:.4f} at {stats['best_iteration']}")
    path = save_filter(
        module, out, threshold=stats["threshold"], model=Path(model_path).name if local else str(model_path),
        model_sha256=digest, source=source, gen_length=gen_length,
        chat=chat, data=data.info, train=stats,
    )
    table = Table(title=f"validation (suggested threshold {stats['threshold']})")
    for col in ("threshold", "precision", "recall", "accept rate"):
        table.add_column(col, justify="right")
    for row in stats["val_thresholds"]:
        table.add_row(f"{row['threshold']:.2f}", f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['accept_rate']:.3f}")
    Console().print(table)
    typer.echo(f"saved {path}")
