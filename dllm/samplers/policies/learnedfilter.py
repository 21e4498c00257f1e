"""Learn2PD (``learnedfilter``): a trained filter (``dllm.samplers.learned``) accepts positions whose current
prediction is already final, plus LLaDA's quota of most confident ones."""

from __future__ import annotations

import math
from typing import Any

from dllm.errors import DllmError
from dllm.registry import Option
from dllm.samplers.base import Policy
from dllm.samplers.learned import FilterSelector, default_filter_path, load_filter_cached
from dllm.samplers.registry import POLICIES, TEMPERATURE
from dllm.samplers.scoring import ProbabilityScorer


def _finite(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DllmError(f"threshold must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v):
        raise DllmError(f"threshold must be a finite number, got {value!r}")
    return v


@POLICIES.register(
    "learnedfilter", "Learn2PD: a trained filter accepts positions whose prediction is final, plus the most confident",
    options=[
        Option("filter_path", None, "filter directory (default: the filter shipped for tiny-llada)", kind=str,
               nullable=True),
        Option("threshold", None, "accept when the filter's probability is > threshold (default: the filter's own)",
               kind=None, nullable=True, parse=_finite, allowed="a number"),
        TEMPERATURE,
    ])
def learnedfilter(filter_path: str | None = None, threshold: float | None = None, temperature: float = 0.0) -> Policy:
    path = default_filter_path() if filter_path is None else filter_path
    if filter_path is None and not path.is_dir():
        raise DllmError(f"no filter shipped at {str(path)!r}; train one with `dllm train-filter` and pass filter_path=...")
    learned = load_filter_cached(path)
    tau = learned.threshold if threshold is None else threshold
    return Policy("learnedfilter", ProbabilityScorer(temperature), FilterSelector(learned, tau),
                  options={"filter_path": str(path), "threshold": tau, "temperature": temperature})
