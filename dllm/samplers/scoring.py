"""Scorers: propose a token and a confidence for every eligible position.

Sampling at temperature > 0 is Gumbel-max in float64 as in LLaDA's reference (low-precision Gumbel noise
hurts quality, arXiv:2409.02908). Noise is drawn per row, only for that row's eligible positions, from the
row's own generator, so a row samples the same tokens whether it runs alone or inside a batch. (The reference
draws noise for the whole canvas and vocabulary each step; its random stream cannot be matched bit for bit.)

Score dtype (option ``score_dtype``, ``SCORE_DTYPE``). Confidences are computed in float32 by default. The
references are not: Dream and Fast-dLLM's Dream samplers take ``softmax`` of the model's bfloat16 logits and keep
every later quantity (top-1, margin, entropy) in bfloat16, and compare a confidence with the threshold in
bfloat16 too (torch rounds the Python number 0.9 to the bfloat16 0.8984375). ``score_dtype="bfloat16"`` runs
exactly those operations: logits cast to bfloat16 (a no-op for a bfloat16 model), ``softmax`` and the confidence
in bfloat16, the token at temperature 0 the first argmax of the *rounded* probabilities (Dream's
``probs.max``), and ``score_threshold`` gives the threshold a selector must use for the bfloat16 comparison. The
confidences then hold bfloat16 values (stored as float32, which represents them exactly), so rounding ties are
broken by the lowest position like every other tie. **Quirk**: float32 is the default although the references
round to bfloat16 (docs/methods.md#dream); rounding makes confidences coarse (steps of 2^-8 near 1) and only
changes borderline decisions, which float32 decides by the true value.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.registry import Option
from dllm.samplers.base import Proposal, StepContext

NEG_INF = float("-inf")

#: score_dtype name -> torch dtype
SCORE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

#: the option of every policy whose scorer supports another arithmetic than float32
SCORE_DTYPE = Option(
    "score_dtype", "float32", "arithmetic of the confidences: float32, or bfloat16 as Dream and Fast-dLLM's Dream "
    "code compute them (softmax, confidence and threshold comparison rounded to bfloat16)", kind=str,
    choices=tuple(SCORE_DTYPES))


def score_threshold(threshold: float, score_dtype: str) -> float:
    """The threshold a confidence of ``score_dtype`` is compared with, as torch compares a tensor of that dtype
    with a Python number: ``conf >= 0.9`` on bfloat16 confidences tests against bfloat16(0.9) = 0.8984375. The
    result is exact in float32, so a float32 comparison of bfloat16-valued confidences with it decides the same."""
    if score_dtype == "float32":
        return float(threshold)
    return float(torch.tensor([threshold], dtype=SCORE_DTYPES[score_dtype]).float())


def _dtype(score_dtype: str) -> torch.dtype:
    assert score_dtype in SCORE_DTYPES, score_dtype
    return SCORE_DTYPES[score_dtype]


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
    (temperature-1) probability of the sampled token, as in the reference. ``score_dtype="bfloat16"``: the
    softmax of the bfloat16-rounded logits in bfloat16 (module docstring); at temperature 0 the token is then the
    first argmax of those rounded probabilities.
    """

    def __init__(self, temperature: float = 0.0, score_dtype: str = "float32") -> None:
        self.temperature = float(temperature)
        self.dtype = _dtype(score_dtype)

    def __call__(self, logits: Tensor, ctx: StepContext) -> Proposal:
        from dllm.kernels import top2_confidence

        b, w, v = logits.shape
        flat_cand = ctx.candidates.reshape(-1)
        conf = torch.full((b * w,), NEG_INF, device=logits.device)
        if self.dtype != torch.float32:
            tokens = sample_tokens(logits, ctx, self.temperature)
            if flat_cand.any():
                probs = torch.softmax(logits.reshape(b * w, v)[flat_cand].to(self.dtype), -1)
                tok = probs.argmax(-1) if self.temperature <= 0 else tokens.reshape(-1)[flat_cand]
                conf[flat_cand] = probs.gather(-1, tok[:, None]).squeeze(-1).float()
                tokens.view(-1)[flat_cand] = tok
        elif self.temperature <= 0:
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
    (``entropy``). Sampling (temperature > 0) draws the token from the scaled distribution.

    ``score_dtype="bfloat16"`` is Dream's own arithmetic: every operation (scaling, softmax, margin, ``log(p +
    1e-10)``, the product and the sum) runs on bfloat16 tensors, and at temperature 0 the token is the first
    argmax of the rounded probabilities."""

    KINDS = ("maskgit_plus", "topk_margin", "entropy")

    def __init__(self, kind: str, temperature: float = 0.0, score_dtype: str = "float32") -> None:
        assert kind in self.KINDS
        self.kind = kind
        self.temperature = float(temperature)
        self.dtype = _dtype(score_dtype)

    def __call__(self, logits: Tensor, ctx: StepContext) -> Proposal:
        b, w, _ = logits.shape
        conf = torch.full((b, w), NEG_INF, device=logits.device)
        tokens = sample_tokens(logits, ctx, self.temperature)
        cand = ctx.candidates
        if cand.any():
            sel = logits[cand].to(self.dtype)
            if self.temperature > 0:
                sel = sel / self.temperature
            probs = torch.softmax(sel, -1)
            if self.dtype != torch.float32 and self.temperature <= 0:
                tokens[cand] = probs.argmax(-1)
            tok = tokens[cand]
            if self.kind == "maskgit_plus":
                c = probs.gather(-1, tok[:, None]).squeeze(-1)
            elif self.kind == "topk_margin":
                top2 = probs.topk(2, dim=-1).values
                c = top2[:, 0] - top2[:, 1]
            else:
                c = (probs * torch.log(probs + 1e-10)).sum(-1)
            conf[cand] = c.float()
        return Proposal(tokens=tokens, confidence=conf)
