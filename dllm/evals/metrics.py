"""Run-level numbers: accuracy, NFE, tokens per forward, throughput, speedup, and AUP.

Per-sample records (as stored by :class:`dllm.evals.store.ResultStore`) use these fields:

* one or more score fields (``bool`` or a number in [0, 1]; e.g. ``correct``, or GSM8K's ``strict_match`` and
  ``flexible_extract``);
* ``gen_tokens``: generated tokens counted for throughput: the tokens before the first end token (EOS/EOT), see
  docs/design.md#conventions;
* ``nfe``: model forward passes spent on the sample;
* ``latency_s``: wall-clock seconds for the sample.

TPF (tokens per forward) is hardware independent, which is why AUP uses it instead of tokens/s.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dllm.errors import DllmError


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise DllmError(f"{name} must be a positive finite number, got {value!r}")


def tokens_per_forward(tokens: float, nfe: float) -> float:
    """TPF = generated tokens / number of forward evaluations."""
    _positive("nfe", nfe)
    if tokens < 0:
        raise DllmError(f"tokens must be >= 0, got {tokens!r}")
    return tokens / nfe


def throughput(tokens: float, seconds: float) -> float:
    """Tokens per second."""
    _positive("seconds", seconds)
    if tokens < 0:
        raise DllmError(f"tokens must be >= 0, got {tokens!r}")
    return tokens / seconds


def speedup(value: float, baseline: float) -> float:
    """How many times faster than the baseline (same model, task and length): ``value / baseline`` throughput."""
    _positive("baseline throughput", baseline)
    return value / baseline


def _field(records: Sequence[Mapping[str, Any]], key: str) -> list[float] | None:
    """Values of ``key``; None if no record has it; an error if only some do (a mixed run)."""
    values = [r[key] for r in records if r.get(key) is not None]
    if not values:
        return None
    if len(values) != len(records):
        raise DllmError(f"field {key!r} is missing in {len(records) - len(values)} of {len(records)} records")
    return [float(v) for v in values]


def summary(records: Iterable[Mapping[str, Any]], score_keys: Sequence[str] = ("correct",)) -> dict[str, Any]:
    """Aggregate per-sample records into one run summary.

    Returns ``n``, ``accuracy`` (``{score_key: mean in [0, 1]}``), ``total_tokens``, ``total_nfe``, ``mean_nfe``,
    ``tpf`` (total tokens / total NFE), ``total_latency_s``, ``mean_latency_s`` and ``tokens_per_s`` (total tokens /
    total latency, as Fast-dLLM's timer over the whole loop). Metrics whose fields no record has are ``None``.
    """
    records = list(records)
    if not records:
        raise DllmError("cannot summarise an empty run: no result records")
    accuracy = {}
    for key in score_keys:
        values = _field(records, key)
        if values is None:
            raise DllmError(f"score field {key!r} is in none of the records; pass score_keys=... naming a stored field")
        accuracy[key] = sum(values) / len(values)
    tokens, nfe, latency = (_field(records, k) for k in ("gen_tokens", "nfe", "latency_s"))
    total_tokens = sum(tokens) if tokens is not None else None
    total_nfe = sum(nfe) if nfe is not None else None
    total_latency = sum(latency) if latency is not None else None
    return {
        "n": len(records),
        "accuracy": accuracy,
        "total_tokens": total_tokens,
        "total_nfe": total_nfe,
        "mean_nfe": total_nfe / len(records) if total_nfe is not None else None,
        "tpf": total_tokens / total_nfe if total_tokens is not None and total_nfe else None,
        "total_latency_s": total_latency,
        "mean_latency_s": total_latency / len(records) if total_latency is not None else None,
        "tokens_per_s": total_tokens / total_latency if total_tokens is not None and total_latency else None,
    }


def aup_weight(y: float, y_max: float, alpha: float = 3.0) -> float:
    """W(y) = min(exp(-alpha * (1 - y / y_max)), 1): accuracy below the best known costs exponentially."""
    return min(math.exp(-alpha * (1.0 - y / y_max)), 1.0)


def aup(
    points: Iterable[tuple[float, float]],
    y_max: float | None = None,
    alpha: float = 3.0,
    max_drop: float = 5.0,
    strict: bool = False,
) -> float:
    """Area Under the accuracy-Parallelism curve (hao-ai-lab / d3LLM), see docs/methods.md#aup.

    ``points``: ``(tpf, accuracy)`` pairs, accuracy in percent [0, 100], e.g. one per decoding threshold.
    They are sorted by TPF; ``y1`` is the accuracy at the lowest TPF. Points below ``y1 - max_drop`` are left
    out (the definition); with ``strict=True`` the reference code's behaviour is used instead: it raises when the
    last (most parallel) point is below that floor.

    AUP = tpf1 * y1 + 1/2 * sum_i (tpf_i - tpf_{i-1}) * (y_i W(y_i) + y_{i-1} W(y_{i-1})), W as in
    :func:`aup_weight` with ``alpha`` (3 in the reference). ``y_max`` is the best accuracy *any method* reaches
    on the task (the reference takes it over the whole comparison group); it defaults to the max over ``points``,
    which makes the score comparable only within that call. With no accuracy loss AUP is the plain area.
    """
    pts = [(float(x), float(y)) for x, y in points]
    if not pts:
        raise DllmError("aup needs at least one (tpf, accuracy) point")
    for x, y in pts:
        if not (math.isfinite(x) and x > 0):
            raise DllmError(f"aup: tpf must be positive, got {x!r}")
        if not (math.isfinite(y) and 0 <= y <= 100):
            raise DllmError(f"aup: accuracy must be a percentage in [0, 100], got {y!r}")
    if all(y <= 1 for _, y in pts):
        warnings.warn("aup: all accuracies are <= 1; they look like fractions, but AUP expects percentages")
    if y_max is None:
        y_max = max(y for _, y in pts)
    if not (math.isfinite(y_max) and y_max > 0):
        raise DllmError(f"aup: y_max must be a positive accuracy, got {y_max!r}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise DllmError(f"aup: alpha must be >= 0, got {alpha!r}")
    pts.sort(key=lambda p: p[0])
    y_min = pts[0][1] - max_drop
    if strict:
        if pts[-1][1] < y_min:
            raise DllmError(
                f"aup: the last point's accuracy {pts[-1][1]} is more than {max_drop} below the first ({pts[0][1]})"
            )
    else:
        pts = [p for p in pts if p[1] >= y_min]
    total = pts[0][0] * pts[0][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        total += 0.5 * (x1 - x0) * (y1 * aup_weight(y1, y_max, alpha) + y0 * aup_weight(y0, y_max, alpha))
    return total
