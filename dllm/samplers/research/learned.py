"""Learn2PD's learned filter as a ``Selector`` (spec ``learn2pd-and-beyond.md`` §1.6).

Per step: the filter sees the row's current-block features (``dllm.training.filter.block_features``: top-1
probability of undecided positions, 1.0 for decided ones, zero padding for short blocks) and accepts the
undecided positions with ``sigmoid(output) > threshold`` (strict, as the reference). The commit set is the
accepted positions plus LLaDA's quota of most confident positions (``steps = gen_length`` gives exactly one:
"accepted plus the most confident one"); the quota is at least one and never reaches outside the block
(the reference's overflow quirk, §1.7, cannot happen). The accepted set is left in the policy state under
``learnedfilter.accepted`` so EoTP's reference mode can apply the L2P+EoT rule.

Blocks longer than the filter's block length (adaptive blocks) are scored in consecutive chunks of that
length; shorter blocks are zero-padded (the reference's trick for a truncated canvas).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from dllm.samplers.base import PolicyState, Proposal, StepContext
from dllm.samplers.research.eotp import FILTER_ACCEPT_KEY
from dllm.samplers.selectors import llada_quota, top_k_mask


def default_filter_path() -> Path:
    """The filter shipped for the tiny LLaDA model (``dllm/assets/tiny-llada-filter``)."""
    return Path(__file__).resolve().parents[2] / "assets" / "tiny-llada-filter"


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float):
    from dllm.training.filter import load_filter

    return load_filter(path)


def load_filter_cached(path: str | os.PathLike):
    """``load_filter`` memoised on (path, modification time): policies are built per ``generate`` call."""
    from dllm.training.filter import CONFIG_FILE, WEIGHTS_FILE, load_filter

    p = Path(path)
    try:
        mtime = max((p / WEIGHTS_FILE).stat().st_mtime, (p / CONFIG_FILE).stat().st_mtime)
    except OSError:
        return load_filter(p)  # raises the one-line error
    return _load_cached(str(p.resolve()), mtime)


class FilterSelector:
    def __init__(self, learned, threshold: float) -> None:
        self.learned = learned
        self.threshold = float(threshold)
        self._module = learned.module
        self._device: torch.device | None = None

    def _on(self, device: torch.device):
        if self._device != device:
            self._module = self.learned.module.to(device)
            self._device = device
        return self._module

    def init_state(self, state: PolicyState) -> None:
        state.values[FILTER_ACCEPT_KEY] = None

    def accept(self, proposal: Proposal, ctx: StepContext) -> Tensor:
        """[B, W] bool: undecided block positions the filter accepts."""
        from dllm.training.filter import block_features

        cand = ctx.candidates
        accepted = torch.zeros_like(cand)
        if not bool(cand.any()):
            return accepted
        start = (ctx.block_start - ctx.window_start).clamp(min=0)
        end = (ctx.block_end - ctx.window_start).clamp(min=0)
        feats, cols, ok = block_features(proposal.confidence, cand, start, end)
        with torch.no_grad():
            probs = self._on(feats.device).predict(feats)
        hit = ok & (probs > self.threshold) & ctx.active[:, None]
        r, j = hit.nonzero(as_tuple=True)
        accepted[r, cols[r, j]] = True
        return accepted & cand

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        accepted = self.accept(proposal, ctx)
        state.values[FILTER_ACCEPT_KEY] = accepted
        k = llada_quota(ctx.block_mask_count, ctx.block_steps, ctx.step).clamp(min=1)
        return accepted | top_k_mask(proposal.confidence, k)
