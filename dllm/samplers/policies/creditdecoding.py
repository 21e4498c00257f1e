"""CreditDecoding: decayed trace credits (a ``LogitsProcessor``, ``dllm.samplers.credit``) fused into the logits,
then the Fast-dLLM threshold rule."""

from __future__ import annotations

from dllm.registry import Option
from dllm.samplers.base import Policy
from dllm.samplers.credit import CreditProcessor
from dllm.samplers.registry import POLICIES, TEMPERATURE, THRESHOLD
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import ThresholdSelector


@POLICIES.register(
    "creditdecoding", "CreditDecoding: decayed trace credits fused into the logits, then the threshold rule",
    options=[
        THRESHOLD,
        Option("credit_alpha", 0.7, "weight of the credit added to the log-probabilities", kind=float, low=0),
        Option("decay_beta", 0.8, "per-step decay of accumulated credit", kind=float, low=0, high=1),
        Option("boost_gamma", 0.2, "exponent of the top-1 probability added to its credit", kind=float, low=0),
        TEMPERATURE,
    ])
def creditdecoding(threshold: float = 0.9, credit_alpha: float = 0.7, decay_beta: float = 0.8,
                   boost_gamma: float = 0.2, temperature: float = 0.0) -> Policy:
    return Policy("creditdecoding", ProbabilityScorer(temperature), ThresholdSelector(threshold),
                  processors=[CreditProcessor(credit_alpha, decay_beta, boost_gamma)],
                  options={"threshold": threshold, "credit_alpha": credit_alpha, "decay_beta": decay_beta,
                           "boost_gamma": boost_gamma, "temperature": temperature})
