"""``ebsampler`` (EB-Sampler, docs/methods.md#ebsampler): commit the longest run of low-entropy candidates whose
entropy, summed without its largest term, stays within a budget ``gamma``.

Rule, per step and row: the entropies ``H_i = -sum_v p_i(v) log p_i(v)`` of the current block's candidates
(``p_i`` = softmax of the temperature-scaled logits, float32, as Dream's ``entropy`` scorer computes them) are
sorted ascending, ``H_(1) <= H_(2) <= ...``; the ``k`` first are committed, ``k`` being the longest prefix with
``sum_{j<=k} H_(j) - max_{j<=k} H_(j) <= gamma``, at least one. Subtracting the largest term is what lets a
single uncertain token through on its own: the bound is on the error of sampling the prefix independently
instead of jointly, which the paper bounds by the summed entropy minus its largest member.

Paper: *Accelerated Sampling from Masked Diffusion Models via Entropy Bounded Unmasking*, Ben-Hamu, Gat, Severo,
Nolte and Karrer, 2025 (arXiv 2505.24857). Authors' code: none published; the rule follows the paper's
definition as restated by several identical third-party samplers (default ``gamma = 0.1``).

Built from existing pieces: ``DreamScorer("entropy")`` proposes the tokens (argmax, or a Gumbel-max sample at
temperature > 0) and the confidence ``-H``; ``EntropyBoundSelector`` (here) turns that confidence into the
commit mask, vectorised over the batch.

**Quirks.**

* The entropy is ``-sum p log(p + 1e-10)`` in float32 (Dream's scorer), not an exact float64 entropy; the
  difference is below 1e-5 nats even over LLaDA's vocabulary, far below any useful ``gamma``.
* Candidates are the undecided positions of the row's current block (semi-autoregressive use, as the
  third-party samplers run it); the paper's single-block sampler ranks every masked position (pass
  ``block_length = gen_length`` for that).
* Ties in entropy go to the lower position (``top_k_mask``); the count ``k`` does not depend on how ties are
  broken, only which of two equally uncertain positions is taken when the prefix ends between them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.registry import Option
from dllm.samplers.base import Policy, PolicyState, Proposal, StepContext
from dllm.samplers.registry import POLICIES, TEMPERATURE
from dllm.samplers.scoring import DreamScorer
from dllm.samplers.selectors import top_k_mask


class EntropyBoundSelector:
    """Longest ascending-entropy prefix with ``cumsum(H) - cummax(H) <= gamma`` (at least one per row).

    Reads ``proposal.confidence`` [B, W] as the negative entropy ``-H`` (finite on candidates, -inf elsewhere),
    which is what ``DreamScorer("entropy")`` produces; any scorer whose ``-confidence`` is a non-negative
    error proxy can feed it."""

    def __init__(self, gamma: float) -> None:
        self.gamma = float(gamma)

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        conf = proposal.confidence  # [B, W] = -H, -inf off candidates
        ent = torch.sort(-conf, dim=-1, stable=True).values  # [B, W] ascending; +inf (non-candidates) last
        finite = torch.isfinite(ent)
        ent = torch.where(finite, ent, torch.zeros_like(ent))
        bound = torch.cumsum(ent, dim=-1) - torch.cummax(ent, dim=-1).values  # [B, W] per prefix length
        ok = finite & (bound <= self.gamma)
        # [B] longest qualifying prefix; a single candidate's bound is 0 <= gamma, so it is >= 1 on non-empty rows
        count = torch.cumprod(ok.long(), dim=-1).sum(-1)
        return top_k_mask(conf, count)  # the `count` lowest entropies; empty rows stay empty


@POLICIES.register(
    "ebsampler", "EB-Sampler: commit the lowest-entropy candidates while their entropy sum minus its largest "
                 "term is <= gamma (at least one)",
    options=[Option("gamma", 0.1, "entropy budget (nats): sum of the committed entropies minus the largest",
                    kind=float, low=0), TEMPERATURE])
def ebsampler(gamma: float = 0.1, temperature: float = 0.0) -> Policy:
    return Policy("ebsampler", DreamScorer("entropy", temperature), EntropyBoundSelector(gamma),
                  options={"gamma": gamma, "temperature": temperature})
