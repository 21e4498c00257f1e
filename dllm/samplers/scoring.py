"""Scorers: propose a token and a confidence for every eligible position.

Sampling at temperature > 0 is Gumbel-max in float64 as in LLaDA's reference (low-precision Gumbel noise
hurts quality, arXiv:2409.02908). Noise is drawn per row, only for that row's eligible positions, from the
row's own generator, so a row samples the same tokens whether it runs alone or inside a batch. (The reference
draws noise for the whole canvas and vocabulary each step; its random stream cannot be matched bit for bit.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.samplers.base import Proposal, StepContext

NEG_INF = float("-inf")


def _rows_positions(candidates: Tensor) -> list[Tensor]:
    return [row.nonzero().squeeze(1) for row in candidates]


def sample_tokens(logits: Tensor, ctx: StepContext, temperature: float) -> Tensor:
    """[B, W] tokens: argmax at temperature 0 (first index on ties), else Gumbel-max of logits/temperature
    on the candidate positions (argmax elsewhere)."""
    tokens = logits.argmax(-1)
    if temperature <= 0:
        return tokens
    for b, pos in enumerate(_rows_positions(ctx.candidates)):
        if pos.numel() == 0:
            continue
        row = logits[b, pos].double()
        u = torch.rand(row.shape, generator=ctx.generators[b], dtype=torch.float64, device=row.device)
        # argmax exp(l) / (-log u)^tau  ==  argmax  l - tau * log(-log u)   (log form cannot overflow)
        tokens[b, pos] = (row - temperature * torch.log(-torch.log(u))).argmax(-1)
    return tokens


class ProbabilityScorer:
    """Confidence = softmax probability of the proposed token (LLaDA ``low_confidence``, Fast-dLLM).

    At temperature 0 this is the top-1 probability, computed by the fused top-2 kernel without materialising
    the vocabulary-wide softmax. At temperature > 0 the token is sampled and the confidence is the
    (temperature-1) probability of the sampled token, as in the reference.
    """

    def __init__(self, temperature: float = 0.0) -> None:
        self.temperature = float(temperature)

    def __call__(self, logits: Tensor, ctx: StepContext) -> Proposal:
        from dllm.kernels import top2_confidence

        b, w, v = logits.shape
        flat_cand = ctx.candidates.reshape(-1)
        conf = torch.full((b * w,), NEG_INF, device=logits.device)
        if self.temperature <= 0:
            tokens = logits.argmax(-1)
            if flat_cand.any():
                p1, idx1, _, _ = top2_confidence(logits.reshape(b * w, v)[flat_cand])
                conf[flat_cand] = p1
                tokens.view(-1)[flat_cand] = idx1
        else:
            tokens = sample_tokens(logits, ctx, self.temperature)
            if flat_cand.any():
                sel = logits.reshape(b * w, v)[flat_cand].float()
                probs_at = torch.softmax(sel, -1).gather(-1, tokens.reshape(-1)[flat_cand][:, None]).squeeze(-1)
                conf[flat_cand] = probs_at
        return Proposal(tokens=tokens, confidence=conf.view(b, w))


class RandomScorer:
    """LLaDA ``random`` remasking: argmax (or sampled) token, uniform random confidence per position."""

    def __init__(self, temperature: float = 0.0) -> None:
        self.temperature = float(temperature)

    def __call__(self, logits: Tensor, ctx: StepContext) -> Proposal:
        tokens = sample_tokens(logits, ctx, self.temperature)
        conf = torch.full(ctx.candidates.shape, NEG_INF, device=logits.device)
        for b, pos in enumerate(_rows_positions(ctx.candidates)):
            if pos.numel():
                conf[b, pos] = torch.rand(pos.numel(), generator=ctx.generators[b], device=logits.device)
        return Proposal(tokens=tokens, confidence=conf)


class DreamScorer:
    """Dream's ``sample_tokens``: probabilities of temperature-scaled logits; confidence is the top-1
    probability (``maskgit_plus``), the top-1 minus top-2 margin (``topk_margin``) or the negative entropy
    (``entropy``). Sampling (temperature > 0) draws the token from the scaled distribution."""

    KINDS = ("maskgit_plus", "topk_margin", "entropy")

    def __init__(self, kind: str, temperature: float = 0.0) -> None:
        assert kind in self.KINDS
        self.kind = kind
        self.temperature = float(temperature)

    def __call__(self, logits: Tensor, ctx: StepContext) -> Proposal:
        b, w, _ = logits.shape
        conf = torch.full((b, w), NEG_INF, device=logits.device)
        tokens = sample_tokens(logits, ctx, self.temperature)
        cand = ctx.candidates
        if cand.any():
            sel = logits[cand].float()
            if self.temperature > 0:
                sel = sel / self.temperature
            probs = torch.softmax(sel, -1)
            tok = tokens[cand]
            if self.kind == "maskgit_plus":
                c = probs.gather(-1, tok[:, None]).squeeze(-1)
            elif self.kind == "topk_margin":
                top2 = probs.topk(2, dim=-1).values
                c = top2[:, 0] - top2[:, 1]
            else:
                c = (probs * torch.log(probs + 1e-10)).sum(-1)
            conf[cand] = c
        return Proposal(tokens=tokens, confidence=conf)
