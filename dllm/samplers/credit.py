"""CreditDecoding (arXiv 2510.06133) as a ``LogitsProcessor``: trace credits fused into the logits.

Reference: dInfer's ``CreditThresholdParallelDecoder`` (docs/methods.md#creditdecoding). Per masked position of the
current block, the token that is the raw top-1 at a step earns credit ``q_top ** gamma``; every step all
credit decays by ``beta`` first; the logits get ``alpha * log(1 + credit)`` added, so a token that keeps
winning but is under-confident reaches the commit threshold sooner. The current step's own contribution is
included before fusion (credit acts on the very first step).

Storage is sparse and exact: per row and block offset a few (token, credit) slots, because at most one token
per position earns credit per step (a dense [B, K, V] float32 matrix would cost ~32 MB per row for K = 64 on
LLaDA's vocabulary). Slots grow on demand.

**Quirk** (state and reset, deliberate): the reference keys credit by absolute block coordinates and clears
it only when no MASK is left anywhere in the canvas, so with an EOS early stop credit and step counters leak
into the next prompt. Here credit lives in the per-``generate`` ``PolicyState`` (one slice per row, so batch
rows never share it), keyed by the offset *inside* the row's current block, and is zeroed for a row whenever
that row opens a block. Within one block this is exactly the reference.

**Quirks** (other differences): the commit rule after fusion is the Fast-dLLM rule (``>= threshold`` plus the
single most confident position), not dInfer's rule that also commits every position within 1e-5 of the row
maximum when the maximum is below the threshold; this only differs on exact ties. Positions whose fused argmax
is the MASK id are treated like every other policy treats them (no special exclusion). Credit is updated once
per forward; dInfer's cached iterations decode twice on a block's first step (refresh forward, then cached
forward) and so update and decay credit twice there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.samplers.base import PolicyState, StepContext

KEY = "credit"


class CreditProcessor:
    """Fuses decayed trace credit into the logits of the current block's undecided positions.

    ``alpha``: weight of the log-credit bonus (0.7); ``beta``: per-step decay (0.8); ``gamma``: exponent on
    the top-1 probability (0.2). Output logits are float32 (as the reference).
    """

    def __init__(self, alpha: float = 0.7, beta: float = 0.8, gamma: float = 0.2) -> None:
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.gamma = float(gamma)

    # --- state -------------------------------------------------------------------------------------
    def init_state(self, state: PolicyState) -> None:
        b = state.batch_size
        state.values[KEY] = {
            "tok": torch.full((b, 0, 1), -1, dtype=torch.long, device=state.device),  # [B, L, M] token per slot
            "cr": torch.zeros((b, 0, 1), dtype=torch.float32, device=state.device),  # [B, L, M] credit per slot
            "calls": torch.zeros(b, dtype=torch.long, device=state.device),  # steps in the current block
        }

    def on_block_start(self, state: PolicyState, rows: Tensor) -> None:
        st = state.values[KEY]
        st["tok"][rows] = -1
        st["cr"][rows] = 0.0
        st["calls"][rows] = 0

    @staticmethod
    def _grow(st: dict, length: int, slots: int) -> None:
        tok, cr = st["tok"], st["cr"]
        b, l0, m0 = tok.shape
        if length <= l0 and slots <= m0:
            return
        l1, m1 = max(length, l0), max(slots, m0)
        new_tok = torch.full((b, l1, m1), -1, dtype=tok.dtype, device=tok.device)
        new_cr = torch.zeros((b, l1, m1), dtype=cr.dtype, device=cr.device)
        new_tok[:, :l0, :m0] = tok
        new_cr[:, :l0, :m0] = cr
        st["tok"], st["cr"] = new_tok, new_cr

    def credits(self, state: PolicyState, row: int) -> dict[int, dict[int, float]]:
        """Debug view: block offset -> {token: credit} for one row."""
        st = state.values[KEY]
        out: dict[int, dict[int, float]] = {}
        tok, cr = st["tok"][row].cpu(), st["cr"][row].cpu()
        for off in range(tok.shape[0]):
            slots = {int(t): float(c) for t, c in zip(tok[off], cr[off]) if t >= 0}
            if slots:
                out[off] = slots
        return out

    # --- the step ----------------------------------------------------------------------------------
    def __call__(self, logits: Tensor, ctx: StepContext, state: PolicyState) -> Tensor:
        from dllm.kernels import top2_confidence

        st = state.values[KEY]
        b, w, v = logits.shape
        out = logits.float().clone()
        cand = ctx.candidates
        st["cr"].mul_(self.beta)  # decay every entry once per step (fresh blocks hold zeros anyway)
        st["calls"] += ctx.active.long()
        if not bool(cand.any()):
            return out
        rows, cols = cand.nonzero(as_tuple=True)
        offsets = ctx.window_start + cols - ctx.block_start[rows]  # offset inside the row's block
        self._grow(st, int((ctx.block_end - ctx.block_start).max()), 1)

        q, top, _, _ = top2_confidence(logits[rows, cols])  # raw top-1 (fp32 softmax) per candidate
        amount = q.float().pow(self.gamma)
        while True:
            slots_tok = st["tok"][rows, offsets]  # [N, M]
            match = slots_tok == top[:, None]
            empty = slots_tok < 0
            has_match, has_empty = match.any(-1), empty.any(-1)
            if bool((has_match | has_empty).all()):
                break
            self._grow(st, st["tok"].shape[1], 2 * st["tok"].shape[2])
        slot = torch.where(has_match, match.long().argmax(-1), empty.long().argmax(-1))
        st["tok"][rows, offsets, slot] = top
        st["cr"][rows, offsets, slot] += amount

        slots_tok = st["tok"][rows, offsets]
        bonus = self.alpha * torch.log1p(st["cr"][rows, offsets])
        bonus = torch.where(slots_tok >= 0, bonus, torch.zeros_like(bonus))
        sub = out[rows, cols]
        sub.scatter_add_(1, slots_tok.clamp(min=0), bonus)
        out[rows, cols] = sub
        return out
