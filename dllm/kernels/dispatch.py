"""Path selection shared by every kernel: whether triton imports, whether the kernels were built for the CPU
interpreter, the ``DLLM_KERNELS`` mode, the forced-path fallback warning and the device's parallelism."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from dllm.errors import DllmError, check_choice

KERNEL_MODES = ("auto", "torch", "triton")


@functools.cache
def triton_available() -> bool:
    """True if ``triton`` and ``triton.language`` import (a broken install counts as absent)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "no triton"
        return False
    return True


def _interpreting_now() -> bool:
    """Whether a ``@triton.jit`` applied now would build an interpreted kernel."""
    if not triton_available():
        return False
    try:
        from triton import knobs

        return bool(knobs.runtime.interpret)
    except Exception:  # noqa: BLE001 - older triton without knobs: the env var is the switch
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Captured before the kernel modules below are imported, i.e. at the moment their kernels are decorated.
TRITON_INTERPRETED: bool = _interpreting_now()


def kernel_mode() -> str:
    """The path requested by ``DLLM_KERNELS`` (``auto`` when unset or empty)."""
    mode = os.environ.get("DLLM_KERNELS", "").strip().lower() or "auto"
    check_choice("DLLM_KERNELS", mode, KERNEL_MODES)
    return mode


@contextmanager
def using_kernels(mode: str) -> Iterator[None]:
    """Run the enclosed code with ``DLLM_KERNELS=mode`` (``auto``, ``torch`` or ``triton``), then restore the
    variable as it was (benchmarks timing one path against the other)."""
    check_choice("DLLM_KERNELS", mode, KERNEL_MODES)
    old = os.environ.get("DLLM_KERNELS")
    os.environ["DLLM_KERNELS"] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DLLM_KERNELS", None)
        else:
            os.environ["DLLM_KERNELS"] = old


def use_triton(*tensors: torch.Tensor) -> bool:
    """Decide whether an op on ``tensors`` runs its Triton kernel.

    ``auto`` picks Triton only when every tensor is on CUDA and the kernels are compiled (not interpreted:
    the interpreter on GPU tensors would be far slower than PyTorch). ``triton`` insists, and raises a
    ``DllmError`` when that cannot work.
    """
    mode = kernel_mode()
    if mode == "torch":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if mode == "auto":
        return on_cuda and triton_available() and not TRITON_INTERPRETED
    if not triton_available():
        raise DllmError("DLLM_KERNELS=triton but triton does not import; install it or use DLLM_KERNELS=auto")
    if not on_cuda and not TRITON_INTERPRETED:
        hint = (
            "TRITON_INTERPRET=1 was set after dllm.kernels was imported; set it before"
            if os.environ.get("TRITON_INTERPRET", "0") == "1"
            else "set TRITON_INTERPRET=1 before importing dllm.kernels, or use DLLM_KERNELS=auto"
        )
        raise DllmError(f"DLLM_KERNELS=triton needs CUDA tensors (got a CPU tensor); {hint}")
    return True


def fallback_warning(op: str, reason: str) -> None:
    """Warn once per (op, reason) when a forced Triton path has to run PyTorch for an unsupported shape."""
    if kernel_mode() == "triton":
        _warn_once(op, reason)


@functools.cache
def _warn_once(op: str, reason: str) -> None:
    warnings.warn(f"DLLM_KERNELS=triton: {op} falls back to PyTorch ({reason})", RuntimeWarning, stacklevel=3)


@functools.cache
def sm_count(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device; sizes the split-K / split-V grids."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def device_parallelism(t: torch.Tensor) -> int:
    """How many programs the device runs at once, roughly (a small fixed number for the interpreter)."""
    if t.is_cuda:
        return sm_count(t.device.index if t.device.index is not None else torch.cuda.current_device())
    return 4
