"""The Extremely Greedy Parallel (EGP) oracle of Learn2PD, which is also the benchmarks' ``replay`` count.

One rule, towards a given output: at each forward, commit every undecided position of the current block whose
model argmax already equals its target token; when none does, commit one position with its target token (the
**fallback**: a token the model did not predict, counted per row), so each forward commits at least one token
and the text equals the targets. It says how few forwards reproduce a given text, not how few any policy needs:
a policy that changes the text can need fewer, and greedy max-commit is not proven minimal.

* ``replay_policy(reference)``: towards a one-token-per-step decode (``lowconf``, ``steps = gen_length``,
  ``trace=True``) of the same prompts, decoded with the same cache and block schedule. Targets are the positions
  the reference committed (not the EOS fill after its ``stop_at_eos`` stop), and the fallback commits the
  candidate the reference committed earliest. So every forward commits at least one position the reference
  committed in a forward of its own: NFE <= the reference's NFE, and the text equals the reference's text.
  This is "the fewest forwards that reproduce the one-token-per-step output" of ``benchmarks/policies.py``.
  It is a measurement, not a decoding policy (it needs the answer first), so it is not registered.
* ``oracle_policy(targets)``: towards any target tokens (no commit order known); the fallback commits the most
  confident candidate. **Quirk** (docs/methods.md#learn2pd): the reference's stuck guard spends one more
  forward, then writes the whole target block.
* ``oracle_nfe(trace, final)``: first-match steps read off a one-token-per-step trace (an approximation).

``fallback_counts(policy)`` gives the fallbacks of a policy's last ``generate`` call, per row.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from dllm.errors import DllmError
from dllm.samplers.base import Policy, PolicyState
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import QuotaSelector, most_confident

#: ``PolicyState`` key of the per-row fallback counter ([B] long)
FALLBACK_KEY = "oracle.fallbacks"


class OracleCommit:
    """Modifier: commit every candidate whose proposal (the argmax) equals its target; when a row has none,
    commit one candidate with its target token: the one with the lowest ``order`` when given (positions with
    ``order < 0`` are no targets: they never match and are picked last), else the most confident."""

    def __init__(self, targets: Tensor, order: Tensor | None = None) -> None:
        self.targets = targets  # [B, gen_length]
        self.order = order  # [B, gen_length] long or None
        self.fallbacks: Tensor | None = None  # [B] long, of the last generate call

    def init_state(self, state: PolicyState) -> None:
        if state.batch_size != self.targets.shape[0]:
            raise DllmError(f"the oracle has targets for {self.targets.shape[0]} rows but the batch has "
                            f"{state.batch_size}; decode the same prompts as the reference")
        self.fallbacks = torch.zeros(state.batch_size, dtype=torch.long, device=state.device)
        state.values[FALLBACK_KEY] = self.fallbacks

    def __call__(self, decision: Any, proposal: Any, logits: Tensor, ctx: Any, state: PolicyState) -> Any:
        g = self.targets.shape[1]
        if ctx.gen_length != g:
            raise DllmError(f"the oracle has targets for gen_length {g}, the decode has {ctx.gen_length}")
        dev = ctx.candidates.device
        w = ctx.candidates.shape[1]
        off = ctx.window_start - ctx.gen_start + torch.arange(w, device=dev)
        inside = (off >= 0) & (off < g)
        idx = off.clamp(0, g - 1)
        tgt = self.targets.to(dev)[:, idx]
        cand = ctx.candidates & ctx.active[:, None] & inside[None, :]
        if self.order is None:
            known = cand
            pick = most_confident(torch.where(cand, proposal.confidence, torch.full_like(proposal.confidence, -torch.inf)))
        else:
            order = self.order.to(dev)[:, idx]
            known = cand & (order >= 0)
            last = 2 * g + 2  # unknown positions after every known one, non-candidates after those
            rank = torch.where(known, order.clamp(min=0), torch.full_like(order, last - 1))
            rank = torch.where(cand, rank, torch.full_like(rank, last))
            pick = torch.zeros_like(cand)
            pick.scatter_(1, rank.argmin(-1, keepdim=True), True)
            pick &= cand
        match = known & (proposal.tokens == tgt)
        stuck = cand.any(-1) & ~match.any(-1)
        forced = pick & stuck[:, None]
        decision.commit = match | forced
        decision.tokens = torch.where(decision.commit, tgt, decision.tokens)
        if self.fallbacks is not None:
            self.fallbacks += forced.any(-1).to(self.fallbacks.device)
        return decision


def _oracle(name: str, commit: OracleCommit, **options: Any) -> Policy:
    # the quota selector's choice is replaced by the modifier; argmax proposals at temperature 0
    return Policy(name, ProbabilityScorer(0.0), QuotaSelector(), modifiers=[commit], options=options)


def oracle_policy(targets: Tensor) -> Policy:
    """The "Extremely Greedy Parallel" oracle (Learn2PD, docs/methods.md#learn2pd) towards ``targets``
    [B, gen_length] (same batch order), with the most-confident fallback."""
    return _oracle("oracle", OracleCommit(targets.clone()))


def replay_policy(reference: Any) -> Policy:
    """The fewest-forwards replay of ``reference``, the ``GenerationOutput`` of a one-token-per-step decode of
    the same prompts (``policy="lowconf"``, ``steps = gen_length``, ``trace=True``). Decode with the same
    prompts, lengths, cache, block schedule and ``stop_at_eos`` as the reference."""
    trace = getattr(reference, "trace", None)
    if trace is None:
        raise DllmError("replay needs the reference decoded with trace=True")
    per_step = [int(s.committed.sum(-1).max()) for s in trace.steps if s.committed.numel()]
    if per_step and max(per_step) > 1:
        raise DllmError(f"replay needs a one-token-per-step reference (lowconf, steps = gen_length); "
                        f"it committed {max(per_step)} tokens in one step")
    order = trace.commit_step()  # [B, G]: step of each reference commit, -1 for the fill after its stop
    return _oracle("replay", OracleCommit(reference.tokens.clone(), order))


def fallback_counts(policy: Policy) -> list[int]:
    """Per row, the forwards of the policy's last ``generate`` call in which the oracle fell back (committed a
    target token the model did not predict)."""
    for m in policy.modifiers:
        if isinstance(m, OracleCommit):
            return [] if m.fallbacks is None else m.fallbacks.tolist()
    raise DllmError(f"policy {policy.name!r} is not an oracle replay")


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
