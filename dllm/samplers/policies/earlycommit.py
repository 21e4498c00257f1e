"""Prophet (``earlycommit``): a base rule (``lowconf`` quota, as the reference, or ``threshold``) plus the
early-commit modifier (``dllm.samplers.prophet``, docs/methods.md#prophet). Every other policy gets the same
modifier, with the same declared options and defaults, with ``early_commit=True`` (``common.py``)."""

from __future__ import annotations

from typing import Any

from dllm.errors import DllmError
from dllm.registry import Option
from dllm.samplers.base import Policy
from dllm.samplers.policies.common import EARLY_COMMIT_OPTIONS, early_commit_modifier
from dllm.samplers.registry import POLICIES, TEMPERATURE
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import QuotaSelector, ThresholdSelector

EARLY_COMMIT_BASES = ("lowconf", "threshold")


@POLICIES.register(
    "earlycommit", "Prophet: a base rule (lowconf or threshold) that commits everything once the answer is stable",
    options=[
        Option("base", "lowconf", "the rule before the early commit: lowconf (step quota) or threshold", kind=str,
               choices=EARLY_COMMIT_BASES),
        Option("threshold", None, "confidence threshold of base=threshold (default 0.9)", kind=float, low=0,
               low_open=True, high=1, nullable=True),
        TEMPERATURE, *EARLY_COMMIT_OPTIONS,
    ])
def earlycommit(base: str = "lowconf", threshold: float | None = None, temperature: float = 0.0,
                early_commit_thresholds: Any = None, answer_region: Any = None, early_commit_gap: Any = None,
                early_commit_scope: Any = None, early_commit_progress: Any = None) -> Policy:
    if base == "lowconf":
        if threshold is not None:
            raise DllmError("threshold applies to base='threshold' only (base 'lowconf' uses the step quota)")
        policy = Policy("earlycommit", ProbabilityScorer(temperature), QuotaSelector(),
                        options={"base": base, "temperature": temperature})
    else:
        tau = 0.9 if threshold is None else threshold
        policy = Policy("earlycommit", ProbabilityScorer(temperature), ThresholdSelector(tau),
                        options={"base": base, "threshold": tau, "temperature": temperature})
    modifier, opts = early_commit_modifier(early_commit_thresholds, answer_region, early_commit_gap,
                                           early_commit_scope, early_commit_progress)
    return policy.add_modifier(modifier, "answer", **opts)
