"""Fast-dLLM's parallel rules: the confidence threshold and the factor rule, with the variants of its Dream code.

``threshold`` is the rule of Fast-dLLM's LLaDA code by default. Three options reach the Dream paths
(docs/methods.md#fast-dllm):

* ``cap="quota"``: the Dream sampler's ``confidence_threshold`` algorithm (``dream/model/generation_utils.py``).
  Each step looks only at the ``q + carry`` most confident candidates, where ``q`` is the fixed quota per step and
  ``carry`` the picks rejected by the threshold on the previous step: the top one is always committed, the others
  when they reach the threshold. Unrolled, step ``i`` commits at most ``(i + 1) q`` tokens minus those already
  committed, so the rule never runs ahead of the quota schedule (NFE >= S_b per block) and only the threshold
  decides how far behind it falls; after the last scheduled step the cap is everything that is left.
* ``first_commit=True``: the Dream block/cache sampler (``dream/model/generation_utils_block.py``): a block's
  first forward commits exactly the block's first position, whatever its confidence; later steps follow the
  rule. (The same option on the Dream policies gives that sampler's entropy path, ``dllm/samplers/policies/dream.py``.)
* ``score_dtype="bfloat16"``: both Dream samplers' arithmetic (``dllm/samplers/scoring.py``).

**Quirks** (each listed under docs/methods.md#fast-dllm):

* ``cap="quota"`` runs per block with the block's ``S_b`` steps and ``m`` candidates; the reference has one block
  (pass ``block_length = gen_length``) and asserts ``m % S == 0``. When ``S_b`` does not divide ``m`` the quota is
  LLaDA's (remainder front-loaded), so the cap after step ``i`` is the LLaDA schedule's total up to ``i``.
* ``first_commit``: the reference's block always opens fully masked; here a block may open with decided positions
  (early commit), and the first *undecided* position is committed.
* At temperature > 0 the Dream samplers score the temperature-scaled probability of the sampled token; ``threshold``
  keeps the temperature-1 probability of Fast-dLLM's LLaDA code whatever the options.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.registry import Option
from dllm.samplers.base import Policy, PolicyState, Proposal, Selector, StepContext
from dllm.samplers.registry import POLICIES, TEMPERATURE, THRESHOLD
from dllm.samplers.scoring import SCORE_DTYPE, ProbabilityScorer, score_threshold
from dllm.samplers.selectors import FactorSelector, ThresholdSelector, llada_quota_total, top_k_mask

CAPS = ("off", "quota")


class QuotaCappedThresholdSelector:
    """Fast-dLLM's Dream ``confidence_threshold``: the threshold rule among the ``cap`` most confident candidates,
    ``cap = Q(i) - committed`` where ``Q(i)`` is the quota schedule's total after step ``i`` (all ``m`` from the
    last scheduled step on) and ``committed`` what the block has committed so far, at least 1.

    The reference keeps a carry, ``cap_i = q + (cap_{i-1} - commits_{i-1})``; summing it gives ``Q(i) -
    committed``, which is what is computed here from the block's counts (no state to keep per row)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        from dllm.kernels import threshold_commit

        m = ctx.block_mask_count
        scheduled = llada_quota_total(m, ctx.block_steps, ctx.step)  # Q(i)
        committed = m - ctx.candidates.sum(-1)
        cap = (scheduled - committed).clamp(min=1)
        return threshold_commit(proposal.confidence, ctx.candidates, self.threshold) & top_k_mask(
            proposal.confidence, cap)


class FirstPositionSelector:
    """Fast-dLLM's Dream block sampler: on a block's first step (``ctx.step == 0``) commit exactly the block's
    first undecided position with its proposed token; on later steps defer to ``inner``."""

    def __init__(self, inner: Selector) -> None:
        self.inner = inner

    def init_state(self, state: PolicyState) -> None:
        if hasattr(self.inner, "init_state"):
            self.inner.init_state(state)

    def on_block_start(self, state: PolicyState, rows: Tensor) -> None:
        if hasattr(self.inner, "on_block_start"):
            self.inner.on_block_start(state, rows)

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        commit = self.inner(proposal, ctx, state)
        opening = ctx.step == 0
        if bool(opening.any()):
            cand = ctx.candidates
            first = torch.zeros_like(cand).scatter_(1, cand.long().argmax(-1, keepdim=True), True) & cand
            commit = torch.where(opening[:, None], first, commit)
        return commit


#: Fast-dLLM's Dream block sampler, on ``threshold`` and on Dream's policies
FIRST_COMMIT = Option("first_commit", False, "commit only the block's first position on its first step, whatever "
                      "its confidence (Fast-dLLM's Dream block/cache sampler)", kind=bool)


@POLICIES.register("threshold", "Fast-dLLM: commit every token with confidence >= threshold (at least one)",
                   options=[THRESHOLD, TEMPERATURE,
                            Option("cap", "off", "off: every candidate that reaches the threshold (LLaDA code); "
                                   "quota: never more than the quota schedule so far, rejected picks carried to "
                                   "the next step (Dream code's confidence_threshold)", kind=str, choices=CAPS),
                            FIRST_COMMIT, SCORE_DTYPE])
def threshold(threshold: float = 0.9, temperature: float = 0.0, cap: str = "off", first_commit: bool = False,
              score_dtype: str = "float32") -> Policy:
    tau = score_threshold(threshold, score_dtype)
    selector: Selector = ThresholdSelector(tau) if cap == "off" else QuotaCappedThresholdSelector(tau)
    if first_commit:
        selector = FirstPositionSelector(selector)
    return Policy("threshold", ProbabilityScorer(temperature, score_dtype), selector,
                  options={"threshold": threshold, "temperature": temperature, "cap": cap,
                           "first_commit": first_commit, "score_dtype": score_dtype})


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
