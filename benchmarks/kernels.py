"""Triton vs PyTorch timing for the hot-path kernels in ``dllm.kernels``.

On CUDA every kernel runs both paths on decode-shaped inputs (LLaDA-8B-like attention, a 126k vocabulary)
and prints a table with the median time per call, the speed ratio and the largest difference between the
two outputs. Each timed call starts with a cold L2 (a 256 MiB buffer is overwritten before it, outside the
timed region), because in real decoding the previous layer has evicted this layer's KV cache.

Without a GPU the timing means nothing, so the script says so and runs a correctness smoke check instead:
the Triton kernels under Triton's CPU interpreter (when triton is installed) against the PyTorch path.

Run from the repository root: ``python benchmarks/kernels.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated: before the import

from dllm import kernels as K  # noqa: E402
from dllm.kernels.dispatch import using_kernels  # noqa: E402


def _max_diff(a: object, b: object) -> float:
    """Largest absolute difference over (nested) outputs; index tensors count mismatches instead."""
    if isinstance(a, tuple):
        return max(_max_diff(x, y) for x, y in zip(a, b, strict=True))
    if a.dtype in (torch.int64, torch.int32, torch.bool):
        return float((a != b).sum().item())
    return float((a.float() - b.float()).abs().max().item())


class _Timer:
    """Median CUDA-event time of single calls, each after an L2 flush that is not timed."""

    def __init__(self, calls: int = 50, warmup: int = 5) -> None:
        self.calls, self.warmup = calls, warmup
        self.flush = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")

    def __call__(self, fn: Callable[[], object]) -> float:
        for _ in range(self.warmup):  # compiles Triton kernels, warms the caching allocator
            fn()
        times = []
        for _ in range(self.calls):
            self.flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1000.0)
        return statistics.median(times)


def _cases(device: str) -> list[tuple[str, str, Callable[[], object], Callable[[], object]]]:
    """(kernel, shape, torch call, triton call) on representative decode shapes."""
    bf16 = torch.bfloat16
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int, dtype: torch.dtype = bf16) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dtype)

    cases = []
    for b, hq, hkv, tk in [(1, 32, 32, 512), (1, 32, 32, 1024), (1, 32, 32, 2048), (8, 32, 32, 1024), (1, 28, 4, 2048)]:
        q, k, v = randn(b, hq, 32, 128), randn(b, hkv, tk, 128), randn(b, hkv, tk, 128)
        mask = torch.ones(b, tk, dtype=torch.bool, device=device)
        mask[1:, : tk // 8] = False  # in a batch, the shorter prompts are left-padded
        shape = f"B={b} Hq={hq} Hkv={hkv} Tq=32 Tk={tk} D=128 bf16"
        cases.append(("attention", shape, lambda q=q, k=k, v=v, m=mask: K.attention_torch(q, k, v, m),
                      lambda q=q, k=k, v=v, m=mask: K.attention_triton(q, k, v, m)))
    vocab = 126464
    for n in (32, 256):
        logits = randn(n, vocab) * 4
        cases.append(("top2_confidence", f"N={n} V={vocab} bf16", lambda x=logits: K.top2_confidence_torch(x),
                      lambda x=logits: K.top2_confidence_triton(x)))
    for b in (1, 8):
        full = randn(b, 128, vocab) * 4
        block = full[:, 32:64]  # the active block's slice of the model output
        cand = torch.rand(b, 32, generator=g, device=device) < 0.6

        def step(mode: str, x: torch.Tensor = block, c: torch.Tensor = cand) -> object:
            with using_kernels(mode):
                return K.fused_threshold_step(x, c, 0.9)

        cases.append(("fused_threshold_step", f"B={b} W=32 V={vocab} bf16 (strided slice)",
                      lambda s=step: s("torch"), lambda s=step: s("triton")))
    conf = torch.rand(8, 32, generator=g, device=device)
    cand = torch.rand(8, 32, generator=g, device=device) < 0.6
    cases.append(("threshold_commit", "B=8 W=32", lambda: K.threshold_commit_torch(conf, cand, 0.9),
                  lambda: K.threshold_commit_triton(conf, cand, 0.9)))
    cache = randn(1, 32, 2048, 128)
    fresh = randn(1, 32, 32, 128)
    pos = torch.arange(1024, 1056, device=device)[None]
    cases.append(("scatter_kv", "B=1 H=32 Tc=2048 Tn=32 D=128 bf16", lambda: K.scatter_kv_torch(cache, fresh, pos),
                  lambda: K.scatter_kv_triton(cache, fresh, pos)))
    return cases


def benchmark() -> None:
    """Time both paths per case and print the table."""
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}")
    if not K.triton_available():
        print("triton does not import: only the PyTorch path can run, nothing to compare")
        return
    import triton

    print(f"triton {triton.__version__}; times are medians of single cold-L2 calls, in microseconds\n")
    timer = _Timer()
    header = f"{'kernel':22s} {'shape':44s} {'torch us':>10s} {'triton us':>10s} {'speedup':>8s} {'max diff':>10s}"
    print(header)
    print("-" * len(header))
    for name, shape, torch_fn, triton_fn in _cases("cuda"):
        diff = _max_diff(torch_fn(), triton_fn()) if name != "scatter_kv" else 0.0
        t_torch, t_triton = timer(torch_fn), timer(triton_fn)
        print(f"{name:22s} {shape:44s} {t_torch:10.1f} {t_triton:10.1f} {t_torch / t_triton:7.2f}x {diff:10.3g}")
    print("\nspeedup = torch time / triton time; max diff: values, or the count of differing indices/flags")


def smoke_check() -> bool:
    """Small Triton-vs-PyTorch comparisons under the CPU interpreter; True when all agree."""
    if not K.triton_available():
        print("triton is not installed: the PyTorch paths are the only ones available; nothing to compare")
        return True
    torch.manual_seed(0)
    ok = True

    def report(name: str, good: bool, detail: str = "") -> None:
        nonlocal ok
        ok &= good
        print(f"  {'ok  ' if good else 'FAIL'} {name} {detail}")

    for dtype, tol in [(torch.float32, 1e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)]:
        q = torch.randn(2, 4, 5, 32).to(dtype)
        k, v = torch.randn(2, 2, 77, 32).to(dtype), torch.randn(2, 2, 77, 32).to(dtype)
        mask = torch.ones(2, 77, dtype=torch.bool)
        mask[1, :20] = False
        ref = K.attention_torch(q.float(), k.float(), v.float(), mask)
        for splits in (1, 3):
            diff = (K.attention_triton(q, k, v, mask, num_splits=splits).float() - ref).abs().max().item()
            report(f"attention {dtype} GQA 4:2 Tk=77 splits={splits}", diff <= tol, f"max diff {diff:.2e}")
        x = torch.randn(6, 3000).to(dtype) * 4
        x[0, [10, 2900]] = 30.0
        got, want = K.top2_confidence_triton(x, num_splits=2), K.top2_confidence_torch(x)
        same_idx = torch.equal(got[1], want[1]) and torch.equal(got[3], want[3])
        close = all(torch.allclose(got[i], want[i], rtol=1e-5, atol=1e-6) for i in (0, 2))
        diff = max((got[0] - want[0]).abs().max().item(), (got[2] - want[2]).abs().max().item())
        report(f"top2_confidence {dtype} V=3000", same_idx and close, f"max diff {diff:.2e}")
        cache, fresh = torch.randn(2, 3, 20, 16).to(dtype), torch.randn(2, 3, 4, 16).to(dtype)
        pos = torch.tensor([[0, 5, -1, 19], [-1, 2, 3, 4]])
        expected = cache.clone()
        K.scatter_kv_torch(expected, fresh, pos)
        K.scatter_kv_triton(cache, fresh, pos)
        report(f"scatter_kv {dtype}", torch.equal(cache, expected))
    conf, cand = torch.rand(5, 40), torch.rand(5, 40) < 0.5
    cand[0] = False
    same = torch.equal(K.threshold_commit_triton(conf, cand, 0.7), K.threshold_commit_torch(conf, cand, 0.7))
    report("threshold_commit", same)
    return ok


def main() -> int:
    if ON_GPU:
        benchmark()
        return 0
    print("No CUDA GPU: a GPU is required for the timing. Running a correctness smoke check instead"
          " (Triton kernels under TRITON_INTERPRET=1 vs the PyTorch reference):")
    good = smoke_check()
    print("smoke check passed" if good else "smoke check FAILED")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
