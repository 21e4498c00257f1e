"""Static vs continuous batching on a ragged workload: batched forwards, rows/s and tokens/s.

Why: when a policy commits several tokens per forward, rows of one batch finish after different numbers of
forwards (on the synthetic suite with ``threshold`` 0.9 a copy answer takes 1 forward, a shuffle answer up to
9). Static batches keep a finished row's slot idle until the slowest row of its batch ends; continuous batching
(``dllm.generate(..., batch_size=B, continuous=True)``; the default on CUDA, static batches on a CPU) gives the
slot to the next prompt at once.
Both decode every prompt exactly as it would alone (the script checks the tokens are identical), so the only
difference is how full each batched forward is.

Setup: the shipped tiny LLaDA on CPU with one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``), the
synthetic test split (``--n-per-family`` prompts per family), the suite's layout (gen_length = block_length =
steps = 16), ``threshold`` 0.9, no cache, ``stop_at_eos`` on (the eval runner's setting), batch 16. Two
workloads: ``mixed`` (families interleaved, copy-0, reverse-0, ..., copy-1, ...: every batch holds fast and slow
rows) and ``grouped`` (benchmark order, one family after another: a batch's rows are alike, so there is less
idle time to recover). Each mode gets one untimed warm-up call; then ``--rounds`` rounds alternate the two modes
(static first in even rounds, continuous first in odd ones) so machine load hits both alike.

Columns: forwards = batched model calls of the whole workload; rows/forward = mean rows per call (sum of the
rows' NFE / forwards; at most the batch size); positions = canvas positions run through the model, padding
included (the compute on a CPU, where a forward costs about its rows times its width); rows/s and tokens/s (generated tokens before the first end
token) use the median wall time over the rounds; speedup is static over continuous wall time per round (median
and range; above 1 when continuous is faster).

    OMP_NUM_THREADS=1 python benchmarks/batching.py                  # 40 per family (240 prompts), 5 rounds
    OMP_NUM_THREADS=1 python benchmarks/batching.py --quick          # 8 per family, 2 rounds: a smoke run
    OMP_NUM_THREADS=1 python benchmarks/batching.py --cache dual --batch-size 32
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402 - the thread setting must come before torch is imported
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from dllm.errors import DllmError  # noqa: E402

MODES = ("static", "continuous")


def workloads(model: Any, n_per_family: int, which: str) -> dict[str, list[list[int]]]:
    """Prompt ids of the synthetic test split: ``grouped`` (benchmark order) and/or ``mixed`` (families
    interleaved)."""
    import dllm
    from dllm.evals.synthetic import interleave_families, load_split

    examples = load_split("test", n_per_family=n_per_family)
    grouped = [dllm.encode_prompt(model, ex.prompt, chat=False) for ex in examples]
    mixed = interleave_families(grouped, n_per_family)
    out = {"mixed": mixed, "grouped": grouped}
    return out if which == "both" else {which: out[which]}


def measure(model: Any, prompts: list[list[int]], rounds: int, **kw: Any) -> dict[str, dict[str, Any]]:
    """Interleaved timing of both modes on one workload; checks that they decode the same tokens."""
    import dllm

    def run(mode: str) -> tuple[Any, float]:
        t0 = time.perf_counter()
        out = dllm.generate(model, prompts, continuous=mode == "continuous", **kw)
        return out, time.perf_counter() - t0

    seen = {"positions": 0}

    def count(module: Any, args: tuple) -> None:  # canvas positions (padding included) through the model
        seen["positions"] += args[0].numel()

    positions = {}
    hook = model.register_forward_pre_hook(count)
    try:
        ref = {}
        for mode in MODES:  # untimed warm-up, also the reference outputs and the positions count
            seen["positions"] = 0
            ref[mode] = run(mode)[0]
            positions[mode] = seen["positions"]
    finally:
        hook.remove()
    if not torch.equal(ref["static"].tokens, ref["continuous"].tokens) or ref["static"].seq_nfe != ref["continuous"].seq_nfe:
        raise SystemExit("error: static and continuous batching decoded different tokens")
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for r in range(rounds):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):
            out, wall = run(mode)
            if not torch.equal(out.tokens, ref[mode].tokens) or out.nfe != ref[mode].nfe:
                raise SystemExit(f"error: {mode} batching is not deterministic across rounds")
            times[mode].append(wall)
    tokens = sum(ref["static"].generated_counts())
    res: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        med = statistics.median(times[mode])
        res[mode] = {"forwards": ref[mode].nfe, "occupancy": sum(ref[mode].seq_nfe) / ref[mode].nfe,
                     "positions": positions[mode],
                     "rows_s": len(prompts) / med, "tokens_s": tokens / med, "times": times[mode]}
    ratios = [s / c for s, c in zip(times["static"], times["continuous"])]
    res["continuous"]["ratio"] = (statistics.median(ratios), min(ratios), max(ratios))
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-family", type=int, default=None, help="synthetic test prompts per family (default 40; quick 8)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per mode (default 5; quick 2)")
    parser.add_argument("--policy", default="threshold")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--cache", default="none")
    parser.add_argument("--workload", choices=("both", "mixed", "grouped"), default="both")
    parser.add_argument("--model", default="tiny-llada", help="shipped model name or checkpoint path")
    parser.add_argument("--device", default="cpu", help="cpu (the measured setting) or cuda")
    parser.add_argument("--quick", action="store_true", help="few prompts and rounds: a smoke run")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 120))
    torch.set_num_threads(1)
    try:
        import dllm
        from dllm.evals.synthetic import ANSWER_LENGTH

        n = args.n_per_family or (8 if args.quick else 40)
        rounds = args.rounds or (2 if args.quick else 5)
        model = dllm.load_model(args.model, device=args.device, dtype="float32")
        opts = {"threshold": args.threshold} if args.policy == "threshold" else {}
        kw = dict(policy=args.policy, cache=args.cache, gen_length=ANSWER_LENGTH, block_length=ANSWER_LENGTH,
                  steps=ANSWER_LENGTH, batch_size=args.batch_size, **opts)
        where = "CPU 1 thread" if args.device == "cpu" else args.device
        table = Table(title=f"{args.model}, {where}, {args.policy}"
                      + (f" {args.threshold}" if args.policy == "threshold" else "")
                      + f", cache {args.cache}, batch {args.batch_size}, {rounds} interleaved rounds, torch {torch.__version__}")
        for col in ("workload", "mode", "prompts", "forwards", "rows/forward", "positions", "rows/s", "tokens/s",
                    "speedup"):
            table.add_column(col, justify="left" if col in ("workload", "mode") else "right")
        for name, prompts in workloads(model, n, args.workload).items():
            res = measure(model, prompts, rounds, **kw)
            for mode in MODES:
                r = res[mode]
                ratio = "1.00" if mode == "static" else "{:.2f}x [{:.2f}-{:.2f}]".format(*r["ratio"])
                table.add_row(name, mode, str(len(prompts)), str(r["forwards"]), f"{r['occupancy']:.1f}",
                              str(r["positions"]), f"{r['rows_s']:.1f}", f"{r['tokens_s']:.0f}", ratio)
        console.print(table)
        console.print("speedup = static / continuous wall time per round: median \\[min-max]; tokens identical in "
                      "both modes (checked)", highlight=False)
    except DllmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
