"""Fast-dLLM's parallel rules: the confidence threshold and the factor rule."""

from __future__ import annotations

from dllm.registry import Option
from dllm.samplers.base import Policy
from dllm.samplers.registry import POLICIES, TEMPERATURE, THRESHOLD
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import FactorSelector, ThresholdSelector


@POLICIES.register("threshold", "Fast-dLLM: commit every token with confidence >= threshold (at least one)",
                   options=[THRESHOLD, TEMPERATURE])
def threshold(threshold: float = 0.9, temperature: float = 0.0) -> Policy:
    return Policy("threshold", ProbabilityScorer(temperature), ThresholdSelector(threshold),
                  options={"threshold": threshold, "temperature": temperature})


FACTOR_RULES = ("paper", "upstream")


@POLICIES.register("factor", "Fast-dLLM factor rule: accept the n-th most confident while (n+1)(1-c) <= factor",
                   options=[Option("factor", 1.0, "the factor f of the rule (n+1)(1-c) < f", kind=float, low=0,
                                   low_open=True),
                            Option("rule", "paper", "paper: a failing candidate is never committed; upstream: "
                                   "Fast-dLLM's code, which also commits the last candidate when it is the first to "
                                   "fail", kind=str, choices=FACTOR_RULES),
                            TEMPERATURE])
def factor(factor: float = 1.0, rule: str = "paper", temperature: float = 0.0) -> Policy:
    return Policy("factor", ProbabilityScorer(temperature), FactorSelector(factor, upstream=rule == "upstream"),
                  options={"factor": factor, "rule": rule, "temperature": temperature})
