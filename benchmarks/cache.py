"""KV caches (none / prefix / dual / delayed) x policies (lowconf, threshold): tokens/s, NFE and accuracy.

Why: a cache is only worth its staleness if it buys time where the model cost dominates, and only safe if it
keeps accuracy. Two sections, each measured side by side in one process (wall-clock ratios are only
comparable within one run; every (cache, policy) pair gets one untimed warm-up generation first, and the
timed runs are interleaved batch by batch so that machine load hits every cache alike):

1. the shipped tiny model (``dllm/assets/tiny-llada``; a random tiny LLaDA with the char tokenizer when it is
   missing, said in the output) on the synthetic suite: accuracy and its change against ``none``. The suite's
   answer region is 16 tokens, decoded here in blocks of ``--tiny-block`` (8: two blocks, so prefix and
   dual differ; ``--tiny-model`` picks another checkpoint).
2. a random-weight LLaDA-shaped model (12 layers, d_model 1024, 16 heads, MLP 3072, vocab 32000;
   ~220M parameters), gen_length 256, block 32, batch 1, where the model cost dominates. Only speed is
   meaningful here. lowconf runs with ``--large-steps`` (64: 4 tokens per step). Random weights make the
   threshold rule degenerate: every masked position gets nearly the same confidence, far below 0.9, so it
   would commit one token per step (256 NFE, too slow for the default run). The section therefore sharpens
   the LM head (``--large-sharpen`` 30) and uses ``--large-threshold`` 0.5, which makes threshold decoding
   commit several tokens per step (about 10 per forward without a cache). Read that row as a cost profile
   of few forwards per block, not as decoding behaviour.

    python benchmarks/cache.py                   # both sections (~10 min on an idle 2-core CPU)
    python benchmarks/cache.py --quick           # fewer samples, a smoke run
    python benchmarks/cache.py --section large --device cuda
    python benchmarks/cache.py --caches none,dual,dual:vicinity=16,delayed:refresh=4

tokens/s: generated tokens (before the first end token; the large model runs with ``stop_at_eos=False`` and
counts all 256) divided by the engine's wall time (tokenisation excluded, CUDA synchronised). NFE: forwards
per sequence (a refresh at block open is that step's forward, not an extra one).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from dllm.errors import DllmError


@dataclass
class Cell:
    """Accumulated results of one (policy, cache) pair."""

    elapsed: float = 0.0
    tokens: int = 0
    nfe: list[int] = field(default_factory=list)
    correct: int = 0
    scored: int = 0
    outputs: list[torch.Tensor] = field(default_factory=list)

    @property
    def tps(self) -> float:
        return self.tokens / self.elapsed if self.elapsed else 0.0

    @property
    def mean_nfe(self) -> float:
        return sum(self.nfe) / len(self.nfe) if self.nfe else 0.0


def parse_caches(spec: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``"none,dual,dual:vicinity=16"`` -> [(label, cache name, options)]."""
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, rest = item.partition(":")
        opts: dict[str, Any] = {}
        for kv in filter(None, rest.split(";")):
            key, eq, value = kv.partition("=")
            if not eq:
                raise DllmError(f"cache option {kv!r} must look like key=value")
            opts[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
        out.append((item, name, opts))
    if not any(name == "none" for _, name, _ in out):
        out.insert(0, ("none", "none", {}))
    return out


def load_tiny(device: str, console: Console, path: str | None = None) -> tuple[Any, str]:
    import dllm
    from dllm.assets import DEFAULT_MODEL

    if path:
        return dllm.load_model(path, device=device, dtype="float32"), path
    if (DEFAULT_MODEL / "config.json").is_file():
        return dllm.load_model(DEFAULT_MODEL, device=device, dtype="float32"), "tiny-llada (shipped)"
    console.print(f"[bold yellow]warning:[/] no shipped model at {DEFAULT_MODEL}; using a RANDOM tiny LLaDA "
                  "with the char tokenizer (accuracy ~0: only speed and NFE mean anything)")
    from dllm.training.diffusion import untrained_model

    model = untrained_model("llada", hidden=128, layers=4, heads=4, device=device)
    return model, "random tiny-llada (no shipped model)"


def load_large(device: str, sharpen: float) -> Any:
    from dllm.models.tiny import make_tiny_model

    model = make_tiny_model("llada", vocab_size=32000, hidden=1024, layers=12, heads=16, intermediate=3072,
                            max_length=4096, tokenizer=False).to(device)
    with torch.no_grad():
        model.model.transformer["ff_out"].weight.mul_(sharpen)
    return model


def run_grid(model: Any, batches: list[Any], policies: list[tuple[str, dict[str, Any]]],
             caches: list[tuple[str, str, dict[str, Any]]], gen: dict[str, Any], count_all: bool,
             scorer: Any, console: Console) -> dict[tuple[str, str], Cell]:
    """Warm up every pair once, then time them interleaved batch by batch."""
    import dllm

    def prompts_of(batch):
        return [ex.prompt for ex in batch] if scorer else batch

    warm_gen = dict(gen, gen_length=gen["block_length"], steps=max(1, gen["steps"] * gen["block_length"] // gen["gen_length"]))
    for pol, popts in policies:
        for _label, name, copts in caches:
            dllm.generate(model, prompts_of(batches[0])[:1], policy=pol, cache=name, **warm_gen, **popts, **copts)
    cells = {(pol, label): Cell() for pol, _ in policies for label, _, _ in caches}
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        for pol, popts in policies:
            for label, name, copts in caches:
                out = dllm.generate(model, prompts_of(batch), policy=pol, cache=name, **gen, **popts, **copts)
                cell = cells[(pol, label)]
                cell.elapsed += out.elapsed
                cell.tokens += out.tokens.numel() if count_all else sum(out.generated_counts())
                cell.nfe.extend(out.seq_nfe)
                cell.outputs.append(out.tokens)
                if scorer:
                    cell.correct += sum(int(scorer(ex, text)) for ex, text in zip(batch, out.texts or []))
                    cell.scored += len(batch)
        console.print(f"  batch {i + 1}/{len(batches)} done ({time.perf_counter() - t0:.0f}s)")
    return cells


def print_table(console: Console, title: str, cells: dict[tuple[str, str], Cell],
                policies: list[tuple[str, dict[str, Any]]], caches: list[tuple[str, str, dict[str, Any]]],
                with_accuracy: bool, gen_length: int) -> None:
    table = Table(title=title)
    for col in ("policy", "cache", "NFE/seq", "TPF", "tokens/s", "speedup", "rows = none"):
        table.add_column(col, justify="left" if col in ("policy", "cache") else "right")
    if with_accuracy:
        table.add_column("accuracy", justify="right")
        table.add_column("Δ acc", justify="right")
    for pol, _ in policies:
        base = cells[(pol, "none")]
        for label, _, _ in caches:
            c = cells[(pol, label)]
            tpf = c.tokens / sum(c.nfe) if c.nfe else 0.0
            same = sum(int((a == b).all(-1).sum()) for a, b in zip(c.outputs, base.outputs))
            rows = sum(a.shape[0] for a in c.outputs)
            row = [pol, label, f"{c.mean_nfe:.1f}", f"{tpf:.2f}", f"{c.tps:.1f}",
                   f"{c.tps / base.tps:.2f}x" if base.tps else "-", f"{same}/{rows}"]
            if with_accuracy:
                acc, bacc = c.correct / max(1, c.scored), base.correct / max(1, base.scored)
                row += [f"{100 * acc:.1f}%", f"{100 * (acc - bacc):+.1f}"]
            table.add_row(*row, end_section=label == caches[-1][0])
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=("all", "tiny", "large"), default="all")
    parser.add_argument("--caches", default="none,prefix,dual,delayed",
                        help="comma-separated caches, options as name:key=value;key=value (none is always included)")
    parser.add_argument("--threshold", type=float, default=0.9, help="threshold policy on the tiny model")
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-per-family", type=int, default=None, help="synthetic test examples per family (default 40; quick 8)")
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--tiny-block", type=int, default=8)
    parser.add_argument("--tiny-model", default=None, help="checkpoint for section 1 (default: shipped tiny-llada)")
    parser.add_argument("--large-prompts", type=int, default=None, help="prompts for the large model (default 2; quick 1)")
    parser.add_argument("--large-prompt-length", type=int, default=48)
    parser.add_argument("--large-gen", type=int, default=256)
    parser.add_argument("--large-block", type=int, default=32)
    parser.add_argument("--large-steps", type=int, default=64, help="lowconf step budget on the large model (64: 4 tokens/step)")
    parser.add_argument("--large-sharpen", type=float, default=30.0)
    parser.add_argument("--large-threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 132))
    torch.set_num_threads(args.threads)
    try:
        caches = parse_caches(args.caches)
        hw = f"{args.device}" + (f", {args.threads} threads" if args.device == "cpu" else "")
        if args.section in ("all", "tiny"):
            from dllm.evals.synthetic import ANSWER_LENGTH, FAMILIES, load_split, score

            model, name = load_tiny(args.device, console, args.tiny_model)
            n = args.n_per_family or (8 if args.quick else 40)
            examples = load_split("test", n_per_family=n)
            batches = []
            for fam in FAMILIES:  # one family per batch keeps padding small, as the suite's evaluate does
                exs = [ex for ex in examples if ex.family == fam]
                batches += [exs[i:i + args.batch_size] for i in range(0, len(exs), args.batch_size)]
            policies = [("lowconf", {}), ("threshold", {"threshold": args.threshold})]
            gen = {"gen_length": ANSWER_LENGTH, "block_length": args.tiny_block, "steps": ANSWER_LENGTH}
            console.print(f"[bold]tiny:[/] {name}, {len(examples)} synthetic examples, batches of {args.batch_size}, "
                          f"gen {ANSWER_LENGTH}, block {args.tiny_block}")
            cells = run_grid(model, batches, policies, caches, gen, False, score, console)
            print_table(console, f"{name}: synthetic suite, {len(examples)} examples, block {args.tiny_block} ({hw}; "
                        "warm-up excluded, speedup vs none in the same run)", cells, policies, caches, True, ANSWER_LENGTH)
        if args.section in ("all", "large"):
            model = load_large(args.device, args.large_sharpen)
            n = args.large_prompts or (1 if args.quick else 2)
            g = torch.Generator().manual_seed(0)
            prompts = [[torch.randint(10, 32000, (1,), generator=g).item() for _ in range(args.large_prompt_length + 4 * i)]
                       for i in range(n)]
            batches = [[p] for p in prompts]
            policies = [("lowconf", {}), ("threshold", {"threshold": args.large_threshold})]
            gen = {"gen_length": args.large_gen, "block_length": args.large_block, "steps": args.large_steps,
                   "stop_at_eos": False}
            params = sum(p.numel() for p in model.parameters()) / 1e6
            console.print(f"[bold]large:[/] random LLaDA-shaped, {params:.0f}M params, {n} prompts at batch 1, "
                          f"gen {args.large_gen}, block {args.large_block}, lowconf steps {args.large_steps}, "
                          f"threshold {args.large_threshold} with head x{args.large_sharpen}")
            cells = run_grid(model, batches, policies, caches, gen, True, None, console)
            print_table(console, f"random LLaDA-shaped {params:.0f}M: gen {args.large_gen}, block {args.large_block}, "
                        f"batch 1, {n} prompts ({hw}; warm-up excluded, speedup vs none in the same run)",
                        cells, policies, caches, False, args.large_gen)
    except DllmError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
