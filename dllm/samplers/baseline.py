"""Baseline policies: the reference rules of LLaDA, Fast-dLLM and Dream."""

from __future__ import annotations

from dllm.samplers.base import Policy
from dllm.samplers.registry import check_positive, check_probability, register_policy
from dllm.samplers.scoring import DreamScorer, ProbabilityScorer, RandomScorer
from dllm.samplers.selectors import DreamScheduleSelector, FactorSelector, QuotaSelector, ThresholdSelector


@register_policy("lowconf", "LLaDA low-confidence remasking: fixed per-step quota, most confident first")
def lowconf(temperature: float = 0.0) -> Policy:
    t = check_positive("temperature", temperature, allow_zero=True)
    return Policy("lowconf", ProbabilityScorer(t), QuotaSelector(), options={"temperature": t})


@register_policy("random", "LLaDA random remasking: fixed per-step quota, random positions")
def random(temperature: float = 0.0) -> Policy:
    t = check_positive("temperature", temperature, allow_zero=True)
    return Policy("random", RandomScorer(t), QuotaSelector(), options={"temperature": t})


@register_policy("threshold", "Fast-dLLM: commit every token with confidence >= threshold (at least one)")
def threshold(threshold: float = 0.9, temperature: float = 0.0) -> Policy:
    tau = check_probability("threshold", threshold)
    t = check_positive("temperature", temperature, allow_zero=True)
    return Policy("threshold", ProbabilityScorer(t), ThresholdSelector(tau), options={"threshold": tau, "temperature": t})


@register_policy("factor", "Fast-dLLM factor rule: accept the n-th most confident while (n+1)(1-c) <= factor")
def factor(factor: float = 1.0, temperature: float = 0.0) -> Policy:
    f = check_positive("factor", factor)
    t = check_positive("temperature", temperature, allow_zero=True)
    return Policy("factor", ProbabilityScorer(t), FactorSelector(f), options={"factor": f, "temperature": t})


def _dream(kind: str, temperature: float, eps: float) -> Policy:
    t = check_positive("temperature", temperature, allow_zero=True)
    e = check_probability("eps", eps)
    return Policy(kind, DreamScorer(kind, t), DreamScheduleSelector(e), options={"temperature": t, "eps": e})


@register_policy("maskgit_plus", "Dream maskgit_plus: top-1 probability, Dream's time schedule")
def maskgit_plus(temperature: float = 0.0, eps: float = 1e-3) -> Policy:
    return _dream("maskgit_plus", temperature, eps)


@register_policy("topk_margin", "Dream topk_margin: top-1 minus top-2 probability, Dream's time schedule")
def topk_margin(temperature: float = 0.0, eps: float = 1e-3) -> Policy:
    return _dream("topk_margin", temperature, eps)


@register_policy("entropy", "Dream entropy: negative entropy confidence, Dream's time schedule")
def entropy(temperature: float = 0.0, eps: float = 1e-3) -> Policy:
    return _dream("entropy", temperature, eps)
