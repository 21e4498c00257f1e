"""``localleap`` (LocalLeap, docs/methods.md#localleap): the Fast-dLLM threshold rule, relaxed next to confident
"anchors".

Rule, per step and row, over the candidates (undecided positions of the current block) with confidence
``c_i`` (top-1 probability): the most confident candidate is always committed; *anchors*, the candidates with
``c_i >= threshold`` (0.9), are committed (the Fast-dLLM rule); a candidate within ``radius`` (4) positions of
an anchor is also committed when ``c_i >= relaxed_threshold`` (0.75). Without an anchor, or with
``relaxed_threshold >= threshold``, this is exactly the ``threshold`` policy. The paper's observation behind
it: a very confident position makes its neighbours' current predictions reliable too, and the effect fades with
distance, so the relaxed threshold applies only inside a bounded neighbourhood.

Distance counts canvas positions, decided or not (a decided position between an anchor and a candidate still
counts). Anchors and commits are both candidates, so the neighbourhood is effectively taken inside the row's
current block, as in the reference (its anchors and commits are the block's masked positions). Computing it
over the whole window, as here (a 1-D max-pool of width ``2 * radius + 1`` over the anchor mask), gives the
same set because nothing outside the block is an anchor or can commit; so a batch, whose window is wider than
a row's block, changes nothing either.

Paper: *Accelerating Diffusion LLM Inference via Local Determinism Propagation*, Kong, Zhang, Liu, Wu, Tian, W.
and Zhou, 2025 (arXiv 2510.07081). Authors' code: ``friedrichor/LocalLeap`` (``generate.py``; defaults
threshold 0.9, relaxed 0.75, radius 4, block 32).

Built from existing pieces: ``ProbabilityScorer`` (float32 top-1 probability) feeds ``LocalLeapSelector`` (here).

**Quirks.**

* Confidences are float32; the reference takes the softmax in float64. Only comparisons within float32 rounding
  of a threshold can differ.
* Not implemented: the reference's optional ``early_stop`` (fill the canvas with EOS once a finished block
  contains EOS); ``stop_at_eos`` (on by default) and the ``eotp`` option play that part here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.registry import Option
from dllm.samplers.base import Policy, PolicyState, Proposal, StepContext
from dllm.samplers.registry import POLICIES, TEMPERATURE, THRESHOLD
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import most_confident


class LocalLeapSelector:
    """Anchors (``c >= threshold``) commit, candidates within ``radius`` positions of an anchor commit at
    ``c >= relaxed_threshold``, the rest at ``c >= threshold``; always the most confident candidate."""

    def __init__(self, threshold: float, relaxed_threshold: float, radius: int) -> None:
        self.threshold = float(threshold)
        self.relaxed_threshold = float(relaxed_threshold)
        self.radius = int(radius)

    def near_anchor(self, anchors: Tensor) -> Tensor:
        """[B, W] bool: positions within ``radius`` of an anchor (anchors [B, W] bool), a max-pool over columns."""
        if anchors.shape[1] == 0 or self.radius == 0:
            return anchors.clone()
        pooled = torch.nn.functional.max_pool1d(anchors.float()[:, None, :], kernel_size=2 * self.radius + 1,
                                                stride=1, padding=self.radius)
        return pooled[:, 0, :] > 0

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        conf = proposal.confidence  # [B, W] float32, -inf off candidates
        cand = ctx.candidates
        anchors = cand & (conf >= self.threshold)
        relaxed = cand & self.near_anchor(anchors) & (conf >= self.relaxed_threshold)
        return anchors | relaxed | (most_confident(conf) & cand)


@POLICIES.register(
    "localleap", "LocalLeap: threshold rule, relaxed to relaxed_threshold within radius positions of an anchor "
                 "(a candidate with confidence >= threshold)",
    options=[
        THRESHOLD,
        Option("relaxed_threshold", 0.75, "confidence that commits a candidate within radius of an anchor",
               kind=float, low=0, low_open=True, high=1),
        Option("radius", 4, "neighbourhood of an anchor: positions on each side", kind=int, low=0),
        TEMPERATURE,
    ])
def localleap(threshold: float = 0.9, relaxed_threshold: float = 0.75, radius: int = 4,
              temperature: float = 0.0) -> Policy:
    return Policy("localleap", ProbabilityScorer(temperature),
                  LocalLeapSelector(threshold, relaxed_threshold, radius),
                  options={"threshold": threshold, "relaxed_threshold": relaxed_threshold, "radius": radius,
                           "temperature": temperature})
