"""End-to-end decoding speed at real model size: whole ``dllm.generate`` calls per cache, kernel path and compile mode.

Why: the kernels were timed one by one (``benchmarks/kernels.py``), but what a user gets is the time of a whole
``generate`` call: the forwards, the sampling step and the engine's bookkeeping between them. This script builds
random-weight models at the published shapes directly on the device in bf16 (``--models llada-8b,dream-7b``: the
dimensions of ``LLADA_8B_CONFIG`` / ``DREAM_7B_CONFIG``; built on the meta device and materialised on the target,
so 16 GB are never built on the CPU; timing does not depend on weight values) and times ``generate`` with a fixed
schedule, so every configuration runs the same forwards: policy ``lowconf`` with ``--steps`` (default 64 for 256
tokens: 4 tokens per step, 8 steps per block of 32), ``stop_at_eos=False`` (all 256 tokens are decoded), random
prompts of ``--prompt-length`` tokens.

Per configuration (model x batch x cache x kernels x compile) it reports

* forwards per call by kind: ``full`` (the whole canvas: every step without a cache, a block's refresh with one)
  and ``cached`` (the fresh positions against the K/V store), with the mean ms of each kind. Each forward is
  timed by wrapping ``CacheManager.full_forward`` and ``KVStoreCache._cached`` (CUDA events on a GPU, so host
  gaps inside a forward count); ``other`` is the rest of the call per step (sampling, bookkeeping);
* the call time (median of ``--repeats`` calls after one untimed warm-up), tokens per second (batch x gen_length /
  call time) and peak memory (CUDA: ``max_memory_allocated`` of the timed calls; CPU: the process's peak RSS);
* the weight-streaming bound: bytes of weights a forward reads (every parameter except the embedding table, of
  which a forward reads only its tokens' rows) / memory bandwidth, the least a forward can take at batch 1, and
  ``cached/bound``: the cached forward's ms over it. Bandwidth comes from a table of spec-sheet peaks keyed by
  device name (H200: 4800 GB/s) or ``--bandwidth GB/s``;
* ``same``: whether the tokens equal those of the same configuration with ``compile=none`` (CUDA graphs replay
  the eager kernels, so they must; ``torch.compile`` may change last bits).

The table is printed as Markdown and, with ``--out``, written as JSON after every configuration (a run stopped
by a time limit keeps what it measured). A summary follows: dual/none tokens per second, triton/torch per cache,
compiled/eager.

    python benchmarks/e2e.py --quick                        # CPU smoke run, small shapes (well under a minute)
    python benchmarks/e2e.py --models llada-8b --batch 1 --kernels torch,triton --compile none,cudagraph
    python benchmarks/e2e.py --run llada-8b:1:none,prefix,dual,delayed:torch,triton:none,cudagraph \\
                             --run llada-8b:16:dual:triton:none,cudagraph --out benchmarks/results/e2e.json

``--run MODEL:BATCHES:CACHES:KERNELS:COMPILE`` (repeatable, comma lists) replaces the grid of ``--models``
``--batch`` ``--caches`` ``--kernels`` ``--compile``. ``cudagraph`` graphs only cached forwards, so it is skipped
for ``cache=none``. Kernel paths are chosen with ``DLLM_KERNELS`` (``dllm/kernels/dispatch.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dllm.errors import DllmError  # noqa: E402
from dllm.kernels.dispatch import using_kernels  # noqa: E402

#: spec-sheet peak memory bandwidth in GB/s; the longest key contained in the device name wins
BANDWIDTH_GBS = {
    "H200": 4800, "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350, "GH200": 4000,
    "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100-SXM4-40GB": 1555, "A100-PCIE-40GB": 1555, "A100": 1555,
    "L40S": 864, "L40": 864, "L4": 300, "A10G": 600, "A10": 600, "V100": 900,
    "RTX 4090": 1008, "RTX 3090": 936, "RTX A6000": 768, "RTX 6000 Ada": 960,
}
CACHES = ("none", "prefix", "dual", "delayed")
QUICK = {"models": "llada-quick,dream-quick", "batch": "1,4", "gen_length": 32, "block_length": 16, "steps": 8,
         "prompt_length": 16, "repeats": 2}


def model_config(name: str) -> dict[str, Any]:
    """The config of a benchmark model: the published 8B/7B configs, or small ones of the same layout."""
    from dllm.models.dream import DREAM_7B_CONFIG
    from dllm.models.llada import LLADA_8B_CONFIG
    from dllm.models.tiny import tiny_config

    configs = {
        "llada-8b": dict(LLADA_8B_CONFIG),
        "dream-7b": dict(DREAM_7B_CONFIG),
        "llada-quick": tiny_config("llada", vocab_size=2048, hidden=128, layers=2, heads=4, intermediate=256,
                                   max_length=1024),
        "dream-quick": tiny_config("dream", vocab_size=2048, hidden=128, layers=2, heads=4, kv_heads=2,
                                   intermediate=256, max_length=1024),
    }
    if name not in configs:
        raise DllmError(f"unknown model {name!r}; choose one of: {', '.join(configs)}")
    return configs[name]


def build_random_model(name: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """A random-weight model built on the meta device and materialised on ``device`` in ``dtype`` (normal(0, 0.02)
    weights, unit norms, zero biases: the initialisation of ``dllm.models.loading.build_model``)."""
    from dllm.models.loading import model_class_for, special_tokens

    config = model_config(name)
    with torch.device("meta"):
        model = model_class_for(config, name)(config)
    model = model.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight") or "layernorm" in pname or pname.endswith("ln_f.weight"):
                p.fill_(1.0)
            elif pname.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
    model.eval().requires_grad_(False)
    model.special = special_tokens(config, None, name)
    model.name_or_path = f"random {name}"
    return model


def streamed_bytes(model: Any) -> int:
    """Bytes of weights one forward reads: all parameters except embedding tables that no linear layer shares
    (a lookup reads only its tokens' rows; a tied head would read the whole table)."""
    linear = {m.weight.data_ptr() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    skip = {m.weight.data_ptr() for m in model.modules() if isinstance(m, torch.nn.Embedding)} - linear
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.data_ptr() not in skip)


def device_bandwidth(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """(GB/s, where it came from)."""
    if override is not None:
        return float(override), "--bandwidth"
    if device.type != "cuda":
        return None, "unknown for a CPU (give --bandwidth)"
    name = torch.cuda.get_device_name(device)
    key = bandwidth_key(name)
    if key is None:
        return None, f"{name!r} is not in the table (give --bandwidth)"
    return float(BANDWIDTH_GBS[key]), f"spec sheet ({key})"


def bandwidth_key(device_name: str) -> str | None:
    """The entry of :data:`BANDWIDTH_GBS` for a device name: the longest key it contains (case-insensitive)."""
    hits = [k for k in BANDWIDTH_GBS if k.lower() in device_name.lower()]
    return max(hits, key=len) if hits else None


# --- timing each forward ---------------------------------------------------------------------------------------

class ForwardTimer:
    """Times every full and cached forward of the ``generate`` calls made inside ``with timer.active():``."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: dict[str, list[Any]] = {"full": [], "cached": []}

    def _timed(self, kind: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn(*args, **kwargs)
                end.record()
                self.marks[kind].append((start, end))
                return out
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.marks[kind].append(time.perf_counter() - t0)
            return out

        return wrapper

    @contextmanager
    def active(self) -> Iterator[None]:
        from dllm.cache.base import CacheManager
        from dllm.cache.managers import KVStoreCache

        full, cached = CacheManager.full_forward, KVStoreCache._cached
        CacheManager.full_forward = self._timed("full", full)
        KVStoreCache._cached = self._timed("cached", cached)
        try:
            yield
        finally:
            CacheManager.full_forward, KVStoreCache._cached = full, cached

    def take(self) -> dict[str, list[float]]:
        """Milliseconds of each forward since the last ``take`` (call after a synchronising ``generate``)."""
        out = {}
        for kind, marks in self.marks.items():
            out[kind] = [s.elapsed_time(e) for s, e in marks] if self.cuda else [m * 1000.0 for m in marks]
            marks.clear()
        return out


# --- one configuration -----------------------------------------------------------------------------------------

@dataclass
class Row:
    model: str
    batch: int
    cache: str
    kernels: str
    compile: str
    full_per_call: int
    cached_per_call: int
    full_ms: float | None
    cached_ms: float | None
    other_ms_per_step: float
    call_s: float
    tokens_per_s: float
    peak_mem_gib: float
    bound_ms: float | None
    cached_over_bound: float | None
    same_tokens: bool | None
    steps: int
    calls: list[float] = field(default_factory=list)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure(model: Any, name: str, prompts: list[list[int]], cache: str, kernels: str, compile_mode: str,
            args: argparse.Namespace, bound_ms: float | None, timer: ForwardTimer) -> tuple[Row, torch.Tensor]:
    """One configuration: an untimed warm-up call, then ``args.repeats`` timed calls."""
    import dllm

    device = model.device
    gen = dict(policy="lowconf", cache=cache, gen_length=args.gen_length, block_length=args.block_length,
               steps=args.steps, stop_at_eos=False, compile=compile_mode)
    with using_kernels(kernels), timer.active():
        dllm.generate(model, prompts, **gen)
        timer.take()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        outs, times = [], {"full": [], "cached": []}
        for _ in range(args.repeats):
            out = dllm.generate(model, prompts, **gen)
            outs.append(out)
            for kind, ms in timer.take().items():
                times[kind] += ms
    elapsed = [o.elapsed for o in outs]
    call_s = statistics.median(elapsed)
    n_full, n_cached = len(times["full"]) // args.repeats, len(times["cached"]) // args.repeats
    full_ms = statistics.fmean(times["full"]) if times["full"] else None
    cached_ms = statistics.fmean(times["cached"]) if times["cached"] else None
    forward_s = (sum(times["full"]) + sum(times["cached"])) / 1000.0 / args.repeats
    steps = outs[0].steps
    row = Row(
        model=name, batch=len(prompts), cache=cache, kernels=kernels, compile=compile_mode,
        full_per_call=n_full, cached_per_call=n_cached, full_ms=full_ms, cached_ms=cached_ms,
        other_ms_per_step=max(0.0, statistics.fmean(elapsed) - forward_s) * 1000.0 / steps,
        call_s=call_s, tokens_per_s=len(prompts) * args.gen_length / call_s, peak_mem_gib=peak_memory_gib(device),
        bound_ms=bound_ms, cached_over_bound=(cached_ms / bound_ms) if cached_ms and bound_ms else None,
        same_tokens=None, steps=steps, calls=elapsed,
    )
    return row, outs[0].tokens


# --- the grid --------------------------------------------------------------------------------------------------

def parse_list(value: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise DllmError(f"empty {what} list")
    for item in items:
        if allowed is not None and item not in allowed:
            raise DllmError(f"unknown {what} {item!r}; choose from: {', '.join(allowed)}")
    return items


def parse_batches(value: str) -> list[int]:
    out = []
    for item in parse_list(value, None, "batch"):
        if not item.isdigit() or int(item) < 1:
            raise DllmError(f"batch {item!r} must be a positive integer")
        out.append(int(item))
    return out


def plan(args: argparse.Namespace) -> list[tuple[str, list[int], list[str], list[str], list[str]]]:
    """[(model, batches, caches, kernels, compile modes)] from ``--run`` specs or the flag grid."""
    from dllm.compiled import COMPILE_MODES
    from dllm.kernels import KERNEL_MODES

    specs = args.run or [f"{m}:{args.batch}:{args.caches}:{args.kernels}:{args.compile}"
                         for m in parse_list(args.models, None, "model")]
    out = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) != 5:
            raise DllmError(f"--run {spec!r} must look like MODEL:BATCHES:CACHES:KERNELS:COMPILE")
        model_config(parts[0])  # checks the name
        out.append((parts[0], parse_batches(parts[1]), parse_list(parts[2], CACHES, "cache"),
                    parse_list(parts[3], KERNEL_MODES, "kernels"), parse_list(parts[4], COMPILE_MODES, "compile mode")))
    return out


def random_prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """Token ids in [16, min(vocab, 100000)): clear of every special id of the tiny and the published models."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(16, min(vocab, 100_000), (batch, length), generator=g).tolist()


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


HEADER = ("| model | batch | cache | kernels | compile | full/cached fwd | full ms | cached ms | other ms/step | "
          "call s | tok/s | peak GiB | bound ms | cached/bound | same |")


def table_line(r: Row) -> str:
    same = "-" if r.same_tokens is None else ("yes" if r.same_tokens else "NO")
    return (f"| {r.model} | {r.batch} | {r.cache} | {r.kernels} | {r.compile} | {r.full_per_call}/{r.cached_per_call} | "
            f"{fmt(r.full_ms, '.2f')} | {fmt(r.cached_ms, '.2f')} | {r.other_ms_per_step:.2f} | {r.call_s:.3f} | "
            f"{r.tokens_per_s:.1f} | {r.peak_mem_gib:.2f} | {fmt(r.bound_ms, '.2f')} | {fmt(r.cached_over_bound, '.2f')} | "
            f"{same} |")


def summary(rows: list[Row]) -> list[str]:
    """Ratios of tokens per second: dual / none, triton / torch, compiled / eager (where both were measured)."""
    by = {(r.model, r.batch, r.cache, r.kernels, r.compile): r for r in rows}
    lines = []
    for (m, b, c, k, cm), r in by.items():
        if c == "dual" and (m, b, "none", k, "none") in by:
            lines.append(f"{m} batch {b} {k} {cm}: dual/none tokens/s = "
                         f"{r.tokens_per_s / by[(m, b, 'none', k, 'none')].tokens_per_s:.2f}x")
        if k == "triton" and (m, b, c, "torch", cm) in by:
            lines.append(f"{m} batch {b} {c} {cm}: triton/torch tokens/s = "
                         f"{r.tokens_per_s / by[(m, b, c, 'torch', cm)].tokens_per_s:.2f}x")
        if cm != "none" and (m, b, c, k, "none") in by:
            lines.append(f"{m} batch {b} {c} {k}: {cm}/eager tokens/s = "
                         f"{r.tokens_per_s / by[(m, b, c, k, 'none')].tokens_per_s:.2f}x")
    return lines


def meta(device: torch.device, args: argparse.Namespace, bandwidth: float | None, source: str) -> dict[str, Any]:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - absent or broken: reported as such
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": name,
            "torch": torch.__version__, "triton": triton_version, "bandwidth_gbs": bandwidth,
            "bandwidth_source": source, "omp_threads": torch.get_num_threads(),
            "schedule": {"policy": "lowconf", "gen_length": args.gen_length, "block_length": args.block_length,
                         "steps": args.steps, "prompt_length": args.prompt_length, "stop_at_eos": False},
            "repeats": args.repeats, "argv": sys.argv[1:]}


def run(args: argparse.Namespace) -> tuple[list[Row], list[dict[str, Any]]]:
    """Measure every configuration of the plan; returns the rows and the configurations that failed."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DllmError("--device cuda but CUDA is not available; use --device cpu (or --quick)")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    bandwidth, source = device_bandwidth(device, args.bandwidth)
    info = meta(device, args, bandwidth, source)
    print(f"device: {info['device']}, torch {info['torch']}, triton {info['triton']}, {args.dtype}, "
          f"bandwidth {fmt(bandwidth, '.0f')} GB/s ({source})")
    print(f"schedule: lowconf, gen_length {args.gen_length}, block {args.block_length}, steps {args.steps}, "
          f"prompt {args.prompt_length} random tokens, stop_at_eos off; median of {args.repeats} calls after a warm-up\n")
    rows: list[Row] = []
    errors: list[dict[str, Any]] = []  #: configurations that raised (an unattended GPU run keeps going)
    models: dict[str, Any] = {}
    printed_header = False
    for name, batches, caches, kernels, compiles in plan(args):
        if name not in models:
            models.clear()  # one model on the device at a time
            if device.type == "cuda":
                torch.cuda.empty_cache()
            t0 = time.perf_counter()
            models[name] = build_random_model(name, device, dtype, seed=args.seed)
            streamed = streamed_bytes(models[name])
            print(f"{name}: {sum(p.numel() for p in models[name].parameters()) / 1e6:.1f}M parameters, "
                  f"{streamed / 1e6:.1f} MB of weights read per forward, built in {time.perf_counter() - t0:.1f} s")
        model = models[name]
        bound_ms = streamed_bytes(model) / (bandwidth * 1e9) * 1000.0 if bandwidth else None
        for batch in batches:
            prompts = random_prompts(batch, args.prompt_length, model.vocab_size, args.seed)
            for cache in caches:
                for kernels_mode in kernels:
                    eager_tokens = None
                    for cm in sorted(compiles, key=lambda m: m != "none"):  # eager first: the reference tokens
                        if cm == "cudagraph" and cache == "none":
                            continue  # only cached forwards are graphed
                        try:
                            row, tokens = measure(model, name, prompts, cache, kernels_mode, cm, args, bound_ms,
                                                  ForwardTimer(device))
                        except DllmError:
                            raise
                        except Exception as exc:  # noqa: BLE001 - an unattended run keeps going; the error is kept
                            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                            errors.append({"model": name, "batch": batch, "cache": cache, "kernels": kernels_mode,
                                           "compile": cm, "error": f"{type(exc).__name__}: {first}"})
                            print(f"| {name} | {batch} | {cache} | {kernels_mode} | {cm} | FAILED: {errors[-1]['error']}",
                                  flush=True)
                            if args.out:
                                write_json(args.out, info, rows, errors)
                            continue
                        if cm == "none":
                            eager_tokens = tokens
                        elif eager_tokens is not None:
                            row.same_tokens = bool(torch.equal(tokens, eager_tokens))
                        rows.append(row)
                        if not printed_header:
                            print(HEADER)
                            print("|" + "---|" * HEADER.count(" | ") + "---|")
                            printed_header = True
                        print(table_line(row), flush=True)
                        if args.out:
                            write_json(args.out, info, rows, errors)
    print()
    for line in summary(rows):
        print(line)
    if errors:
        print(f"\n{len(errors)} configuration(s) FAILED (listed above and under 'errors' in the JSON)")
    if bandwidth:
        print(f"\nbound = weight bytes read per forward / {bandwidth:.0f} GB/s; cached/bound = cached ms / bound ms")
    return rows, errors


def write_json(path: str, info: dict[str, Any], rows: list[Row], errors: list[dict[str, Any]]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps({"meta": info, "rows": [asdict(r) for r in rows], "errors": errors}, indent=1) + "\n")
    tmp.replace(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU smoke run: small models, short schedule, fp32")
    p.add_argument("--models", default="llada-8b,dream-7b", help="llada-8b, dream-7b, llada-quick, dream-quick")
    p.add_argument("--batch", default="1,16", help="batch sizes (comma list)")
    p.add_argument("--caches", default=",".join(CACHES))
    p.add_argument("--kernels", default="torch,triton", help="DLLM_KERNELS paths (comma list)")
    p.add_argument("--compile", default="none", help="compile modes of dllm.generate: none, compile, cudagraph")
    p.add_argument("--run", action="append", help="MODEL:BATCHES:CACHES:KERNELS:COMPILE (repeatable; replaces the grid)")
    p.add_argument("--gen-length", type=int, default=256)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--steps", type=int, default=64, help="lowconf step budget (a fixed number of forwards)")
    p.add_argument("--prompt-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (after one warm-up)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--bandwidth", type=float, default=None, help="memory bandwidth in GB/s (overrides the table)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])}
        for key, value in QUICK.items():
            if key not in given:
                setattr(args, key, value)
        if "kernels" not in given:
            args.kernels = "torch"
        args.device = args.device or "cpu"
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    for key in ("gen_length", "block_length", "steps", "prompt_length", "repeats"):
        if getattr(args, key) < 1:
            raise DllmError(f"--{key.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """0: all measured; 1: a configuration failed, or CUDA graphs changed the tokens; 2: bad input."""
    try:
        rows, errors = run(parse_args(argv))
    except DllmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    differ = [r for r in rows if r.compile == "cudagraph" and r.same_tokens is False]
    if differ:
        print(f"{len(differ)} CUDA-graph configuration(s) gave tokens that differ from eager (column 'same')")
    return 1 if errors or differ else 0


if __name__ == "__main__":
    sys.exit(main())
