"""Selectors: turn per-position confidences into a commit mask (rows independent, ties to the lowest index).

All selectors read only ``proposal.confidence`` (-inf on non-candidates) and the step context, so any scorer
(probability, credit-fused, learned) can feed any selector.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.samplers.base import PolicyState, Proposal, StepContext


def top_k_mask(conf: Tensor, k: Tensor) -> Tensor:
    """[B, W] bool selecting the k[b] highest finite confidences of each row; ties go to the lower index
    (the references use ``torch.topk``, whose tie order is unspecified)."""
    order = torch.sort(conf, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(conf.shape[1], device=conf.device).expand_as(order))
    return (ranks < k[:, None]) & torch.isfinite(conf)


def most_confident(conf: Tensor) -> Tensor:
    """One-hot [B, W] at each row's highest finite confidence (first index on ties); empty rows stay empty."""
    one = torch.zeros_like(conf, dtype=torch.bool)
    idx = conf.argmax(-1, keepdim=True)
    one.scatter_(1, idx, True)
    return one & torch.isfinite(conf)


def llada_quota(mask_count: Tensor, steps: Tensor, step: Tensor) -> Tensor:
    """LLaDA ``get_num_transfer_tokens``: m masks over S steps, ``m // S`` each and the remainder front-loaded."""
    steps = steps.clamp(min=1)
    base, rem = mask_count // steps, mask_count % steps
    return torch.where(step < steps, base + (step < rem).long(), torch.zeros_like(base))


def llada_quota_total(mask_count: Tensor, steps: Tensor, step: Tensor) -> Tensor:
    """``llada_quota`` summed over steps ``0 .. step`` (all ``m`` from the last step on):
    ``(i + 1) (m // S) + min(i + 1, m % S)`` with ``i = min(step, S - 1)``."""
    steps = steps.clamp(min=1)
    done = torch.minimum(step, steps - 1) + 1
    return done * (mask_count // steps) + torch.minimum(done, mask_count % steps)


class QuotaSelector:
    """Fixed transfer schedule of LLaDA's ``generate``: commit the top-``quota[step]`` positions per row."""

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        k = llada_quota(ctx.block_mask_count, ctx.block_steps, ctx.step)
        return top_k_mask(proposal.confidence, k)


class ThresholdSelector:
    """Fast-dLLM: commit every candidate with confidence >= threshold, and always the most confident one."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        from dllm.kernels import threshold_commit

        return threshold_commit(proposal.confidence, ctx.candidates, self.threshold)


class FactorSelector:
    """Fast-dLLM factor rule: sort candidates by confidence; accept rank r (0-based) while
    ``c_r >= 1 - factor / (r + 2)``; rank 0 always (the paper's rule, ``upstream=False``, the default).

    **Quirk** of the reference (``get_transfer_index_dynamic``): it also accepts the last candidate when that one
    is the first to fail, so the two last masked tokens of a block are always committed together. We do not by
    default (a failing candidate is never committed); ``upstream=True`` (policy option ``rule="upstream"``)
    reproduces the reference exactly."""

    def __init__(self, factor: float, upstream: bool = False) -> None:
        self.factor = float(factor)
        self.upstream = bool(upstream)

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        conf = proposal.confidence
        sorted_conf, order = torch.sort(conf, dim=-1, descending=True, stable=True)
        ranks = torch.arange(conf.shape[1], device=conf.device, dtype=torch.float32)
        thresholds = 1.0 - self.factor / (ranks + 2.0)
        thresholds[0] = -1.0
        ok = (sorted_conf >= thresholds) & torch.isfinite(sorted_conf)
        count = torch.cumprod(ok.long(), dim=-1).sum(-1)  # length of the accepted prefix
        if self.upstream:
            n = torch.isfinite(conf).sum(-1)
            count = torch.where(count == n - 1, n, count)  # the reference's "+1 when it stopped at n-1"
        return top_k_mask(conf, count)


class DreamScheduleSelector:
    """Dream's step rule: with ``t, s`` consecutive entries of ``linspace(1, eps, S_b + 1)`` commit
    ``int(n_mask * (1 - s / t))`` top positions (all remaining on the last step); float32 and truncation as
    in the reference. Dream averages ``n_mask`` over the batch (**Quirk**); we count per row, so rows are
    independent of their batch."""

    def __init__(self, eps: float = 1e-3) -> None:
        self.eps = float(eps)

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        n_mask = ctx.candidates.sum(-1)
        k = torch.empty_like(n_mask)
        for b in range(ctx.batch_size):
            steps = int(ctx.block_steps[b])
            i = int(ctx.step[b])
            if i >= steps - 1:
                k[b] = n_mask[b]
                continue
            ts = torch.linspace(1, self.eps, steps + 1)
            k[b] = int(float(n_mask[b]) * (1 - ts[i + 1] / ts[i]))
        return top_k_mask(proposal.confidence, k)
