"""The Extremely Greedy Parallel (EGP) oracle of Learn2PD and the oracle replay count.

``oracle_policy(targets)`` commits every position whose current prediction already equals its target token;
``oracle_nfe(trace, final)`` counts, along a one-token-per-step trace, the forwards such a replay needs. Both are
measured towards a given output (the one-token-per-step decode): they say how few forwards reproduce that text,
not how few any policy needs, since a policy that changes the text can need fewer.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from dllm.samplers.base import Policy
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import QuotaSelector, most_confident


class _OracleCommit:
    """Modifier of the EGP oracle: commit every candidate whose proposal equals its target token; when none
    does, commit the most confident candidate with its target token (**Quirk**: the reference's stuck guard
    writes the whole target block instead), so the output always equals the targets."""

    def __init__(self, targets: Tensor) -> None:
        self.targets = targets  # [B, gen_length]

    def __call__(self, decision: Any, proposal: Any, logits: Tensor, ctx: Any, state: Any) -> Any:
        b, w = ctx.candidates.shape
        off = ctx.window_start - ctx.gen_start + torch.arange(w, device=ctx.candidates.device)
        tgt = self.targets.to(ctx.candidates.device)[:, off.clamp(0, self.targets.shape[1] - 1)]
        match = ctx.candidates & (proposal.tokens == tgt)
        stuck = ctx.candidates.any(-1) & ~match.any(-1)
        forced = most_confident(proposal.confidence) & stuck[:, None]
        decision.commit = match | forced
        decision.tokens = torch.where(decision.commit, tgt, decision.tokens)
        return decision


def oracle_policy(targets: Tensor) -> Any:
    """The "Extremely Greedy Parallel" oracle (Learn2PD, docs/methods.md#learn2pd) for one batch: ``targets`` [B, gen_length]
    are the final tokens of the slow decode of the same prompts (same batch order)."""
    return Policy("oracle", ProbabilityScorer(0.0), QuotaSelector(), modifiers=[_OracleCommit(targets.clone())])


def oracle_nfe(trace: Any, final: Tensor, end_ids: Sequence[int] = ()) -> list[int]:
    """Per row, the forwards an oracle needs that commits every position as soon as the current prediction
    equals its final token, measured along the (one-token-per-step) baseline ``trace`` of ``final``.

    Per block, the oracle finishes after ``1 + max_i (first step, counted from the block's first step, at
    which the proposal at i equals final[i])``; a position committed by the baseline counts at the latest at
    its commit step. In the block holding the row's first end token, only the positions up to that token
    count (the engine stops the row there). An approximation: a real oracle run would see different
    contexts once it commits early, so this is a reference point, not a strict bound."""
    b, g = final.shape
    gs = trace.gen_start
    ends = torch.tensor(list(end_ids), dtype=final.dtype)
    first = torch.full((b, g), -1, dtype=torch.long)  # global step of the first match
    block_of = torch.full((b, g), -1, dtype=torch.long)  # block start (gen offset) at that time
    block_open: dict[tuple[int, int], int] = {}  # (row, block start) -> first step of that block
    for s in trace.steps:
        ws = s.window_start
        for r in range(b):
            if not bool(s.active[r]):
                continue
            key = (r, int(s.block_start[r]) - gs)
            block_open.setdefault(key, s.step)
        prop = trace.to_generation_coords(s.proposed, ws, -1)
        cand = trace.to_generation_coords(s.candidates, ws, False)
        hit = cand & (prop == final) & (first < 0)
        first[hit] = s.step
        bstart = (s.block_start - gs)[:, None].expand(b, g)
        block_of[hit] = bstart[hit]
    out = []
    for r in range(b):
        row = final[r]
        is_end = torch.isin(row, ends) if ends.numel() else torch.zeros_like(row, dtype=torch.bool)
        cut = int(is_end.nonzero()[0, 0]) + 1 if bool(is_end.any()) else g
        per_block: dict[int, int] = {}
        for i in range(cut):
            bsi = int(block_of[r, i])
            if bsi < 0 or int(first[r, i]) < 0:
                continue  # never proposed as a candidate (e.g. filled after an early stop)
            need = int(first[r, i]) - block_open[(r, bsi)] + 1
            per_block[bsi] = max(per_block.get(bsi, 0), need)
        out.append(sum(per_block.values()))
    return out
