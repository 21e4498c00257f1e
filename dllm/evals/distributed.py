"""Data-parallel evaluation: process-group set-up from the launcher's environment (torchrun, accelerate), object
broadcast/gather, and the per-rank result shards that rank 0 folds into the main store."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from dllm.errors import DllmError
from dllm.evals.store import ResultStore


def dist_state(device_type: str = "cpu") -> tuple[int, int]:
    """``(rank, world_size)``; creates the process group from ``RANK``/``WORLD_SIZE`` (set by torchrun or
    accelerate) when there are several processes and none exists (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1
    if not dist.is_available():
        raise DllmError("WORLD_SIZE > 1 but torch.distributed is not available in this PyTorch build")
    init_distributed(device_type)
    return dist.get_rank(), dist.get_world_size()


def init_distributed(device_type: str = "cpu") -> tuple[int, int, int]:
    """Initialise torch.distributed from the launcher's environment; ``(rank, world_size, local_rank)``.
    A no-op returning ``(0, 1, 0)`` for a single process."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local


def broadcast(obj: Any, world: int) -> Any:
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_flags(flag: bool, world: int) -> list[bool]:
    import torch.distributed as dist

    flags: list[Any] = [None] * world
    dist.all_gather_object(flags, flag)
    return [bool(f) for f in flags]


def shard_paths(bench_dir: Path, tag: str) -> list[Path]:
    pattern = os.path.join(glob.escape(str(bench_dir)), glob.escape(tag) + ".rank*-of-*.jsonl")
    return sorted(Path(p) for p in glob.glob(pattern))


def merge_shards(main: ResultStore, shards: Sequence[Path], config: Mapping[str, Any], order: Mapping[str, int]) -> None:
    """Append the shards' records missing from ``main`` (in benchmark order), then delete the shard files."""
    pending: list[dict] = []
    for path in shards:
        with ResultStore(path, config) as shard:
            pending.extend(r for r in shard.records() if r["id"] not in main)
    seen = set()
    for rec in sorted(pending, key=lambda r: order.get(str(r["id"]), 1 << 60)):
        if rec["id"] in seen:
            continue
        seen.add(rec["id"])
        main.append(rec)
    for path in shards:
        path.unlink(missing_ok=True)


__all__ = ["broadcast", "dist_state", "gather_flags", "init_distributed", "merge_shards", "shard_paths"]
