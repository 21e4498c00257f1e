"""LLaDA's remasking rules: a fixed per-step quota, filled most-confident-first (``lowconf``) or at random."""

from __future__ import annotations

from dllm.samplers.base import Policy
from dllm.samplers.registry import POLICIES, TEMPERATURE
from dllm.samplers.scoring import ProbabilityScorer, RandomScorer
from dllm.samplers.selectors import QuotaSelector


@POLICIES.register("lowconf", "LLaDA low-confidence remasking: fixed per-step quota, most confident first",
                   options=[TEMPERATURE])
def lowconf(temperature: float = 0.0) -> Policy:
    return Policy("lowconf", ProbabilityScorer(temperature), QuotaSelector(), options={"temperature": temperature})


@POLICIES.register("random", "LLaDA random remasking: fixed per-step quota, random positions", options=[TEMPERATURE])
def random(temperature: float = 0.0) -> Policy:
    return Policy("random", RandomScorer(temperature), QuotaSelector(), options={"temperature": temperature})
