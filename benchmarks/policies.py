"""Every decoding policy on the synthetic suite: accuracy, NFE, tokens per forward, speedup, and the replay count.

Why: one table that says what each acceleration buys over one-token-per-step decoding on the same model, in
the same process (wall-clock ratios are only comparable within one run), next to ``replay``: the fewest
forwards that reproduce the one-token-per-step output (``dllm.samplers.oracle.replay_policy``: at each forward
commit every position whose argmax already equals that output, else the position the one-token-per-step
decode committed next, with its token: the counted fallback). It is not a lower bound: a policy that changes
the text (right or wrong) can need fewer forwards. Evaluation layout of the suite:
gen_length = block_length = steps = ANSWER_LENGTH; ``--cache`` applies to every row, the replay included.

    python benchmarks/policies.py                         # shipped tiny-llada (+ its filter), 40 per family
    python benchmarks/policies.py --n-per-family 100 --threshold 0.8
    python benchmarks/policies.py --model path/to/ckpt --filter path/to/filter

Without the shipped model it falls back to a random tiny LLaDA (with a warning): the numbers then only show
that everything runs. Without a filter for the model it trains a quick one first (with a warning).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from dllm.errors import DllmError


def load_benchmark_model(name: str | None, device: str, console: Console) -> tuple[Any, str]:
    import dllm
    from dllm.assets import DEFAULT_MODEL

    path = Path(name) if name else DEFAULT_MODEL
    if (path / "config.json").is_file() or name:
        return dllm.load_model(path, device=device, dtype="float32"), str(path)
    console.print(f"[bold yellow]warning:[/] no shipped model at {path}; using a RANDOM tiny LLaDA "
                  "(accuracy will be ~0: the table only shows that every policy runs)")
    from dllm.training.diffusion import untrained_model

    model = untrained_model("llada", hidden=64, layers=2, heads=4, device=device)
    return model, "random tiny-llada"


def resolve_filter(arg: str | None, model: Any, model_name: str, console: Console) -> str:
    from dllm.samplers.learned import default_filter_path

    if arg:
        return arg
    shipped = default_filter_path()
    if shipped.is_dir() and model_name != "random tiny-llada":
        return str(shipped)
    console.print("[bold yellow]warning:[/] no shipped filter for this model; training a quick one "
                  "(200 train prompts, 1500 iterations)")
    from dllm.evals.synthetic import ANSWER_LENGTH, load_split
    from dllm.samplers.learned import save_filter
    from dllm.training.filter import collect_filter_data, train_filter

    prompts = [ex.prompt for ex in load_split("train", 40)]
    data = collect_filter_data(model, prompts, ANSWER_LENGTH, ANSWER_LENGTH, batch_size=100)
    module, stats = train_filter(data, iterations=1500)
    return str(save_filter(module, Path(tempfile.mkdtemp()) / "filter", threshold=stats["threshold"]))


def run_policy(model: Any, batches: list[list[Any]], policy: str, options: dict[str, Any], trace: bool = False
               ) -> dict[str, Any]:
    import dllm
    from dllm.evals.synthetic import ANSWER_LENGTH, score

    correct, nfe, gen, elapsed, cpu, outs = 0, [], [], 0.0, 0.0, []
    for chunk in batches:
        c0 = time.process_time()
        out = dllm.generate(model, [ex.prompt for ex in chunk], policy=policy, gen_length=ANSWER_LENGTH,
                            block_length=ANSWER_LENGTH, steps=ANSWER_LENGTH, trace=trace, **options)
        correct += sum(int(score(ex, text)) for ex, text in zip(chunk, out.texts or []))
        nfe.extend(out.seq_nfe)
        gen.extend(out.generated_counts())
        elapsed += out.elapsed
        cpu += time.process_time() - c0
        if trace:
            outs.append(out)
    n = len(nfe)
    return {"accuracy": correct / n, "nfe": sum(nfe) / n, "tpf": sum(gen) / max(1, sum(nfe)), "seconds": elapsed, "cpu": cpu,
            "outs": outs, "generated": sum(gen), "total_nfe": sum(nfe)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the shipped tiny-llada)")
    parser.add_argument("--filter", default=None, help="Learn2PD filter directory (default: the shipped one)")
    parser.add_argument("--n-per-family", type=int, default=40)
    parser.add_argument("--threshold", type=float, default=0.9, help="threshold of threshold/credit/adaptive rows")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", default="none", help="KV cache of every row (the replay's reference too)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings stable on a shared CPU)")
    parser.add_argument("--no-extras", action="store_true", help="skip the EoTP rows")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timing rounds over all policies, interleaved; the fastest round of each policy counts")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    try:
        from dllm.api import generate as dllm_generate
        from dllm.evals.synthetic import ANSWER_LENGTH, FAMILIES, load_split
        from dllm.samplers.oracle import fallback_counts, oracle_nfe, replay_policy

        torch.set_num_threads(args.threads)
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. adaptive blocks without a newline token
        model, model_name = load_benchmark_model(args.model, args.device, console)
        filter_path = resolve_filter(args.filter, model, model_name, console)
        examples = load_split("test", n_per_family=args.n_per_family)
        batches = []
        for fam in FAMILIES:  # one family per batch keeps padding small
            exs = [ex for ex in examples if ex.family == fam]
            batches += [exs[i:i + args.batch_size] for i in range(0, len(exs), args.batch_size)]
        tau = args.threshold
        rows: list[tuple[str, str, dict[str, Any]]] = [
            ("lowconf (1 token/step)", "lowconf", {}),
            (f"threshold {tau}", "threshold", {"threshold": tau}),
            ("factor 1.0", "factor", {"factor": 1.0}),
            (f"creditdecoding {tau}", "creditdecoding", {"threshold": tau}),
            ("earlycommit (lowconf + Prophet)", "earlycommit", {}),
            ("earlycommit, min gap", "earlycommit", {"early_commit_gap": "min"}),
            ("learnedfilter", "learnedfilter", {"filter_path": filter_path}),
            (f"threshold {tau} + adaptive", "threshold", {"threshold": tau, "block_schedule": "adaptive"}),
        ]
        if not args.no_extras:
            rows += [
                ("lowconf + eotp threshold", "lowconf", {"eotp": "threshold"}),
                ("learnedfilter + eotp reference", "learnedfilter", {"filter_path": filter_path, "eotp": "reference"}),
            ]
        rows = [(label, policy, {**opts, "cache": args.cache}) for label, policy, opts in rows]
        run_policy(model, [batches[0][:8]], "lowconf", {})  # warm-up (allocator, kernels)
        results: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        for rnd in range(max(1, args.rounds)):
            for label, policy, opts in rows:
                r = run_policy(model, batches, policy, opts, trace=(rnd == 0 and label == rows[0][0]))
                if label in results:
                    assert r["nfe"] == results[label]["nfe"], "decoding is deterministic"
                    results[label]["seconds"] = min(results[label]["seconds"], r["seconds"])
                    results[label]["cpu"] = min(results[label]["cpu"], r["cpu"])
                else:
                    results[label] = r
                console.print(f"[dim]round {rnd + 1}: {label} ({r['seconds']:.1f} s)[/]")
        total = time.perf_counter() - t0
        # replay: the fewest forwards that reproduce the baseline's one-token-per-step output (same texts)
        base_outs = results[rows[0][0]]["outs"]
        replay, fallbacks, replay_texts = [], [], []
        for chunk, out in zip(batches, base_outs):
            pol = replay_policy(out)
            o = dllm_generate(model, [ex.prompt for ex in chunk], policy=pol, cache=args.cache,
                              gen_length=ANSWER_LENGTH, block_length=ANSWER_LENGTH, steps=ANSWER_LENGTH)
            replay.extend(o.seq_nfe)
            fallbacks.extend(fallback_counts(pol))
            replay_texts.append(o.texts == out.texts)
        assert all(replay_texts), "the replay reproduces the one-token-per-step texts"
    except DllmError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2

    base = results[rows[0][0]]
    oracle = [n for out in base["outs"] for n in oracle_nfe(out.trace, out.tokens, out.end_ids)]
    oracle_mean = sum(oracle) / len(oracle)
    replay_mean = sum(replay) / len(replay)
    n_params = sum(p.numel() for p in model.parameters())
    table = Table(title=f"{model_name} ({n_params / 1e6:.2f}M params) · synthetic test, {len(examples)} examples · "
                        f"gen = block = steps = {ANSWER_LENGTH} · cache {args.cache} · {args.device}, batch {args.batch_size}")
    for col in ("policy", "accuracy", "mean NFE", "TPF", "speedup (NFE)", "speedup (wall)", "speedup (CPU)", "seconds"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for label, _, _ in rows:
        r = results[label]
        table.add_row(label, f"{100 * r['accuracy']:.1f}%", f"{r['nfe']:.2f}", f"{r['tpf']:.2f}",
                      f"{base['nfe'] / r['nfe']:.2f}x", f"{base['seconds'] / r['seconds']:.2f}x",
                      f"{base['cpu'] / r['cpu']:.2f}x", f"{r['seconds']:.2f}")
    table.add_row("[italic]replay (fewest forwards reproducing 1 tok/step output)[/]", f"{100 * base['accuracy']:.1f}%",
                  f"{replay_mean:.2f}", f"{base['generated'] / max(1, sum(replay)):.2f}",
                  f"{base['nfe'] / replay_mean:.2f}x", "-", "-", "-")
    table.add_row("[dim italic]  first matches read off the 1 tok/step trace (approx.)[/]", f"{100 * base['accuracy']:.1f}%",
                  f"{oracle_mean:.2f}", f"{base['generated'] / max(1, sum(oracle)):.2f}",
                  f"{base['nfe'] / oracle_mean:.2f}x", "-", "-", "-")
    console.print(table)
    console.print(f"[dim]TPF = generated tokens (before the first EOS) per forward; speedups are over the first row, "
                  f"wall-clock (engine time) and CPU time (process, less sensitive to other load) = fastest of {args.rounds} "
                  f"interleaved rounds in this run ({total:.1f} s in all). replay: each forward commits every position "
                  f"whose argmax already equals the first row's output there, else (fallback: a token the model did not "
                  f"predict) the position the first row committed next; same texts as the first row, so the same "
                  f"accuracy. The fallback fired in {sum(fallbacks)} of {sum(replay)} forwards "
                  f"({sum(f > 0 for f in fallbacks)} of {len(fallbacks)} examples). Not a lower bound: a policy that "
                  f"changes the text can need fewer forwards. The row below it reads the first-match steps off the "
                  f"first row's own trace, where context arrives slower (an approximation, higher).[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
