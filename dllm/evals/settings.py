"""The settings of one eval run: lengths, option checks, the file-name tag and the fingerprinted run config.

Everything here is decided before any model work, so a bad run fails in a second with one line, and a rerun with
settings that change results is recognised (``run_config`` is the store's fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dllm.errors import DllmError
from dllm.evals.bench import get_benchmark
from dllm.options import check_configuration, option_table, preset_of, resolve_preset
from dllm.samplers.registry import make_schedule

#: bump when records or summaries change meaning (part of the fingerprint)
HARNESS_VERSION = 1


@dataclass(frozen=True)
class Lengths:
    gen_length: int
    block_length: int
    steps: int


def resolve_lengths(model: Any, bench: str, gen_length: int | None = None, block_length: int | None = None,
                    steps: int | None = None) -> Lengths:
    """The bench's default lengths (``Benchmark.default_lengths``: the checkpoint's generation defaults for the
    synthetic suite, gen_length 256 / block 32 / steps 256 for text benchmarks), overridden by the user's. A user
    gen_length different from the default resets the default block (the default block if it divides, else one
    block) and steps (= gen_length)."""
    bench_obj, _ = get_benchmark(bench)
    base = bench_obj.default_lengths(model)
    g = base["gen_length"] if gen_length is None else gen_length
    same = g == base["gen_length"]
    if block_length is None:
        if same:
            block_length = base["block_length"]
        else:
            block_length = base["block_length"] if g % base["block_length"] == 0 else g
    if steps is None:
        steps = base["steps"] if same else g
    for name, v in (("gen_length", g), ("block_length", block_length), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise DllmError(f"{name} must be a positive integer, got {v!r}")
    return Lengths(int(g), int(block_length), int(steps))


def check_run(policy: str, options: Mapping[str, Any], cache: str, block_schedule: str, lengths: Lengths) -> None:
    """Every user mistake of a run (policy, option names and values, cache, schedule, lengths) as a one-line
    DllmError, before any model work."""
    routed = check_configuration(policy, cache, block_schedule, options)
    make_schedule(routed.names[2], lengths.gen_length, lengths.block_length, lengths.steps, **routed.block_schedule)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:g}"
    return re.sub(r"[^A-Za-z0-9.+-]", "-", str(value))


def policy_tag(policy: str, options: Mapping[str, Any], cache: str, block_schedule: str, lengths: Lengths) -> str:
    """File-name-safe name of a decoding configuration, e.g. ``threshold_threshold-0.9_cache-prefix_g256-b32-s256``."""
    parts = [_fmt(policy)]
    parts += [f"{_fmt(k)}-{_fmt(v)}" for k, v in sorted(options.items())]
    if cache != "none":
        parts.append(f"cache-{_fmt(cache)}")
    if block_schedule != "fixed":
        parts.append(f"sched-{_fmt(block_schedule)}")
    parts.append(f"g{lengths.gen_length}-b{lengths.block_length}-s{lengths.steps}")
    return "_".join(parts)


def weights_stamp(path: str) -> str | None:
    """A cheap fingerprint of a local checkpoint's weights (names, sizes, first and last 64 KiB), so retrained
    weights under the same path are not mixed with old results. None for hub ids."""
    directory = Path(path)
    if not directory.is_dir():
        return None
    h = hashlib.sha256()
    for file in sorted(directory.glob("*.safetensors")):
        size = file.stat().st_size
        h.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as f:
            h.update(f.read(65536))
            f.seek(max(0, size - 65536))
            h.update(f.read(65536))
    return h.hexdigest()[:16]


def run_config(model: Any, bench: str, policy: str, options: Mapping[str, Any], *, cache: str, block_schedule: str,
               lengths: Lengths, chat: bool, seed: int, data: str | os.PathLike | None,
               bench_options: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that changes a run's per-sample results (the store's fingerprint). Not included: limit and
    batch size (each row decodes as it would alone), the device index. A preset's run also stores its expansion
    (``expanded``: policy, cache, block schedule)."""
    bench_obj, _ = get_benchmark(bench)
    name = str(getattr(model, "name_or_path", ""))
    if name and os.path.isdir(name):
        name = os.path.realpath(name)
    cfg: dict[str, Any] = {
        "harness_version": HARNESS_VERSION,
        "bench": bench,
        "model": name,
        "weights": weights_stamp(name),
        "dtype": str(model.dtype).replace("torch.", ""),
        "device_type": model.device.type,
        "policy": policy,
        "options": dict(sorted(options.items())),
        # the declared defaults of every option left unset: a release that changes a default must not resume
        # records decoded under the old one
        "defaults": json.loads(json.dumps(
            {k: opt.default for k, (_, opt) in sorted(option_table(policy, cache, block_schedule).items())
             if k not in options}, default=str)),
        "cache": cache,
        "block_schedule": block_schedule,
        "gen_length": lengths.gen_length,
        "block_length": lengths.block_length,
        "steps": lengths.steps,
        "chat": bool(chat),
        "seed": seed,
        "stop_at_eos": True,
    }
    if preset_of(policy) is not None:
        # a preset is stored by name with the caller's cache and schedule (``none``/``fixed`` keep the preset's),
        # and ``defaults`` holds only option values: what it expands to is stored too, so a release that changes a
        # preset's policy, cache or schedule refuses the records of the old one. Only for presets, so the
        # fingerprints of other runs are unchanged.
        expanded = resolve_preset(policy, cache, block_schedule)
        cfg["expanded"] = dict(zip(("policy", "cache", "block_schedule"), expanded[:3]))
    cfg.update(bench_obj.data_fingerprint(data, bench_options))
    return cfg


__all__ = ["HARNESS_VERSION", "Lengths", "check_run", "policy_tag", "resolve_lengths", "run_config", "weights_stamp"]
