"""Hot-path kernels for block decoding with KV caches, each with a PyTorch reference and a Triton version.

Every public op (``attention``, ``top2_confidence``, ``threshold_commit``, ``fused_threshold_step``,
``scatter_kv``) is a dispatcher: it runs the Triton kernel on CUDA tensors when ``triton`` imports, and the
PyTorch reference otherwise. The ``*_torch`` / ``*_triton`` functions are exported too, so tests and
benchmarks can call one path explicitly.

``DLLM_KERNELS=torch|triton|auto`` (default ``auto``, read at every call) forces a path:

* ``torch``  -- always the PyTorch reference.
* ``triton`` -- always Triton; an error if triton does not import, or if a tensor is on the CPU and the
  kernels were not built for Triton's CPU interpreter (see below). Shapes a kernel does not support
  (e.g. attention head dims that are not a power of two in 16..256) still fall back to PyTorch, with a
  warning, because refusing them would only crash decoding.
* ``auto``   -- Triton on CUDA tensors, PyTorch elsewhere.

Triton's interpreter (``TRITON_INTERPRET=1``) runs the kernels on CPU tensors, which is how the tests check
them without a GPU. Triton 3.x reads the variable when ``@triton.jit`` *decorates* a function, i.e. when the
kernel modules of this package are imported, not when a kernel is launched: set ``TRITON_INTERPRET=1``
before the first ``import dllm.kernels``. Whether the kernels were built interpreted is recorded in
``TRITON_INTERPRETED``.
"""

from __future__ import annotations

from dllm.kernels.attention import attention, attention_torch, attention_triton
from dllm.kernels.confidence import (
    fused_threshold_step,
    threshold_commit,
    threshold_commit_torch,
    threshold_commit_triton,
    top2_confidence,
    top2_confidence_torch,
    top2_confidence_triton,
)
from dllm.kernels.dispatch import KERNEL_MODES, TRITON_INTERPRETED, kernel_mode, triton_available, use_triton
from dllm.kernels.scatter import scatter_kv, scatter_kv_torch, scatter_kv_triton

__all__ = [
    "KERNEL_MODES",
    "TRITON_INTERPRETED",
    "attention",
    "attention_torch",
    "attention_triton",
    "fused_threshold_step",
    "kernel_mode",
    "scatter_kv",
    "scatter_kv_torch",
    "scatter_kv_triton",
    "threshold_commit",
    "threshold_commit_torch",
    "threshold_commit_triton",
    "top2_confidence",
    "top2_confidence_torch",
    "top2_confidence_triton",
    "triton_available",
    "use_triton",
]
