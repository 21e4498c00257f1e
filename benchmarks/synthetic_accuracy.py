"""Per-family exact-match accuracy and mean NFE of a checkpoint on the synthetic test split.

Why: this is the number the shipped tiny models are documented with (``dllm/assets/README.md``), and the
quickest check of a decoding policy's accuracy/speed trade-off on a CPU. Default: the shipped tiny-llada,
low-confidence decoding with one token per step over the 16-token answer region.

    python benchmarks/synthetic_accuracy.py                          # tiny-llada, lowconf, 100 per family
    python benchmarks/synthetic_accuracy.py --model tiny-dream
    python benchmarks/synthetic_accuracy.py --policy threshold -o threshold=0.9
    python benchmarks/synthetic_accuracy.py --tradeoff               # accuracy vs tokens per step, per family
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from dllm.errors import DllmError
from dllm.evals.synthetic import ANSWER_LENGTH

#: (label, policy, options) of ``--tradeoff``: fixed tokens per step, then confidence thresholds.
TRADEOFF = [(f"lowconf {ANSWER_LENGTH // s} tok/step", "lowconf", {"steps": s}) for s in (16, 8, 4, 2, 1)] + [
    (f"threshold {t}", "threshold", {"threshold": t}) for t in (0.9, 0.7, 0.5)]


def resolve_model(name: str | None) -> Path:
    """A shipped checkpoint name (``tiny-llada``/``tiny-dream``) or a directory; default tiny-llada."""
    from dllm.assets import DEFAULT_MODEL, SHIPPED, asset_path

    if name is None:
        return DEFAULT_MODEL
    if name in SHIPPED:
        return asset_path(name)
    return Path(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint dir or shipped name (default: tiny-llada)")
    parser.add_argument("--policy", default="lowconf")
    parser.add_argument("--n-per-family", type=int, default=100)
    parser.add_argument("--families", default=None, help="comma-separated (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="step budget (default: gen length = one token per step)")
    parser.add_argument("--block-length", type=int, default=None)
    parser.add_argument("--cache", default="none")
    parser.add_argument("-o", "--option", action="append", default=[], help="extra policy/cache option key=value")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--tradeoff", action="store_true",
                        help="one row per decoding setting (fixed tokens per step, thresholds): accuracy and NFE per family")
    args = parser.parse_args(argv)
    console = Console()
    try:
        import dllm
        from dllm.cli.common import parse_options
        from dllm.evals.synthetic import FAMILIES, load_split
        from dllm.training.diffusion import evaluate

        torch.set_num_threads(args.threads)
        path = resolve_model(args.model)
        model = dllm.load_model(path, device=args.device)
        fams = FAMILIES if args.families is None else tuple(f.strip() for f in args.families.split(","))
        examples = load_split("test", n_per_family=args.n_per_family, families=fams)
        options = parse_options(args.option)
        options.update(cache=args.cache, steps=args.steps or ANSWER_LENGTH,
                       block_length=args.block_length or ANSWER_LENGTH)
        if args.tradeoff:
            rows = [(label, evaluate(model, examples, policy=policy, batch_size=args.batch_size, **{**options, **opts}))
                    for label, policy, opts in TRADEOFF]
            Console(width=150).print(_tradeoff_table(path.name, args.n_per_family, rows))
            return 0
        t0 = time.perf_counter()
        res = evaluate(model, examples, policy=args.policy, batch_size=args.batch_size, **options)
        elapsed = time.perf_counter() - t0
    except DllmError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    n_params = sum(p.numel() for p in model.parameters())
    table = Table(title=f"{path.name} ({model.kind}, {n_params / 1e6:.2f}M params), policy {args.policy}, "
                        f"{args.n_per_family} test examples per family")
    table.add_column("family")
    table.add_column("accuracy", justify="right")
    table.add_column("mean NFE", justify="right")
    for fam, acc in res["per_family"].items():
        table.add_row(fam, f"{100 * acc:.1f}%", f"{res['nfe'][fam]:.2f}")
    mean_nfe = sum(res["nfe"].values()) / len(res["nfe"])
    table.add_row("[bold]all", f"[bold]{100 * res['accuracy']:.1f}%", f"[bold]{mean_nfe:.2f}")
    console.print(table)
    console.print(f"{res['n']} examples in {elapsed:.1f}s")
    return 0


def _tradeoff_table(name: str, n: int, rows: list[tuple[str, dict]]) -> Table:
    """Rows = decoding settings; cells = accuracy % and mean NFE per family."""
    fams = list(rows[0][1]["per_family"])
    table = Table(title=f"{name}: exact match % (mean NFE) on {n} test examples per family, gen = block = {ANSWER_LENGTH}")
    table.add_column("decoding")
    for fam in [*fams, "all"]:
        table.add_column(fam, justify="right")
    for label, res in rows:
        cells = [f"{100 * res['per_family'][f]:.0f} ({res['nfe'][f]:.1f})" for f in fams]
        mean_nfe = sum(res["nfe"].values()) / len(res["nfe"])
        table.add_row(label, *cells, f"{100 * res['accuracy']:.1f} ({mean_nfe:.1f})")
    return table


if __name__ == "__main__":
    sys.exit(main())
