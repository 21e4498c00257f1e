"""Prophet early commit (docs/methods.md#prophet) as a ``Modifier`` usable on top of any policy.

Each step, for every active row that has not fired yet: the gap ``top1 - top2`` of the **raw** logits
(a log-probability ratio) is measured on the row's undecided positions of the *answer region* and reduced
to one number (``mean``, as the reference, or ``min``). If it reaches the progress-dependent threshold
(``thresholds[0]`` while less than 33% of the generation is decided, ``thresholds[1]`` below 67%,
``thresholds[2]`` after), every undecided position of that row's answer region is committed from this
step's forward ("all-in"), on top of whatever the base policy committed.

**Quirks** (deviations from the reference, ``generate_earlyexit.py``):

* The answer region is explicit: ``answer_region=(start, end)`` offsets into the generation (end exclusive,
  clipped to ``gen_length``); default the whole generation. The reference hard-codes 5 positions two
  tokens after forced "The answer is" constraint tokens and only works when those are given. With the
  default, a long and confidently predicted EOS tail dominates the mean gap, so the rule can fire on the
  first forward; an ``answer_region`` or ``early_commit_gap="min"`` avoids that.
* The all-in commit covers the answer region. By default that is the whole generation, as in the reference;
  positions outside a narrower region keep decoding normally, whereas the reference always commits the whole
  canvas (so its "monitor 5, commit all" cannot be expressed).
* Progress is the fraction of generated positions already decided before the step (``ctx.progress``). The
  reference uses ``g / S`` (1-based step over the total step budget), which only exists for fixed-step
  schedules; with one token per step the two agree up to one step (ours is ``(g - 1) / S``).
* The gap is taken over undecided positions only (decided ones are final and may be outside the logits
  window); the reference reads its 5 positions whether decoded or not.
* Gap precision: fp32 from the model's logits (the reference subtracts bf16 logits).
* Batches: per row (the reference only supports batch size 1).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from dllm.errors import DllmError
from dllm.samplers.base import Decision, PolicyState, Proposal, StepContext

KEY = "early_commit"
PROGRESS_BOUNDARIES = (0.33, 0.67)
DEFAULT_THRESHOLDS = (7.5, 5.0, 2.5)
GAP_REDUCTIONS = ("mean", "min")


def prophet_threshold(progress: Tensor | float, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> Tensor:
    """The gap threshold at a decoding progress in [0, 1] (early < 0.33 <= mid < 0.67 <= late)."""
    p = torch.as_tensor(progress, dtype=torch.float64)
    t0, t1, t2 = (float(t) for t in thresholds)
    return torch.where(p < PROGRESS_BOUNDARIES[0], torch.full_like(p, t0),
                       torch.where(p < PROGRESS_BOUNDARIES[1], torch.full_like(p, t1), torch.full_like(p, t2)))


def should_exit(progress: float, gap: float, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> bool:
    """Prophet's criterion: ``gap >= threshold(progress)``."""
    return bool(gap >= float(prophet_threshold(progress, thresholds)))


def parse_thresholds(value: Any) -> tuple[float, float, float]:
    """Three gap thresholds (early, mid, late) from a sequence, a number (constant) or ``"7.5,5,2.5"``."""
    raw = value
    if isinstance(value, str):
        value = [v for v in value.replace(";", ",").split(",") if v.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise DllmError(f"early_commit_thresholds must be three numbers (early, mid, late), got {raw!r}") from None
    if len(vals) != 3 or any(not (v >= 0) for v in vals):
        raise DllmError(f"early_commit_thresholds must be three numbers >= 0 (early, mid, late), got {raw!r}")
    return vals  # type: ignore[return-value]


def parse_region(value: Any) -> tuple[int, int | None] | None:
    """``None`` (whole generation), ``(start, end)`` / ``[start, end]`` or ``"start:end"`` generation offsets
    (end exclusive; ``end`` may be omitted/None for "to the end")."""
    if value is None:
        return None
    raw = value
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 2:
            raise DllmError(f"answer_region must look like 'start:end' (generation offsets), got {raw!r}")
        value = (parts[0].strip() or 0, parts[1].strip() or None)
    try:
        start, end = value
        start = int(start)
        end = None if end is None else int(end)
    except (TypeError, ValueError):
        raise DllmError(f"answer_region must be (start, end) generation offsets, got {raw!r}") from None
    if start < 0 or (end is not None and end <= start):
        raise DllmError(f"answer_region {raw!r} must satisfy 0 <= start < end")
    return start, end


class EarlyCommit:
    """Prophet's all-in commit as a modifier (needs the policy's ``window == "answer"``)."""

    def __init__(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, region: tuple[int, int | None] | None = None,
                 reduce: str = "mean") -> None:
        self.thresholds = parse_thresholds(thresholds)
        self.region = region
        if reduce not in GAP_REDUCTIONS:
            raise DllmError(f"unknown early_commit_gap {reduce!r}; choose one of: {', '.join(GAP_REDUCTIONS)}")
        self.reduce = reduce

    def init_state(self, state: PolicyState) -> None:
        # fired[b]: the row early-committed; gap[b]: its last measured (reduced) gap, for inspection
        state.values[KEY] = {
            "fired": torch.zeros(state.batch_size, dtype=torch.bool, device=state.device),
            "gap": torch.full((state.batch_size,), float("nan"), device=state.device),
        }

    def region_mask(self, ctx: StepContext) -> Tensor:
        """[W] bool: window columns inside the answer region."""
        w = ctx.tokens.shape[1]
        off = ctx.window_start - ctx.gen_start + torch.arange(w, device=ctx.tokens.device)
        if self.region is None:
            return off >= 0
        start, end = self.region
        if start >= ctx.gen_length:
            raise DllmError(f"answer_region start {start} is outside the generation (gen_length {ctx.gen_length})")
        end = ctx.gen_length if end is None else min(end, ctx.gen_length)
        return (off >= start) & (off < end)

    def __call__(self, decision: Decision, proposal: Proposal, logits: Tensor, ctx: StepContext,
                 state: PolicyState) -> Decision:
        st = state.values[KEY]
        monitored = ctx.undecided & ctx.active[:, None] & self.region_mask(ctx)[None, :]
        rows = monitored.any(-1) & ~st["fired"]
        if not bool(rows.any()):
            return decision
        monitored &= rows[:, None]
        r, c = monitored.nonzero(as_tuple=True)
        top2 = ctx.logits[r, c].float().topk(2, dim=-1).values
        gap = top2[:, 0] - top2[:, 1]
        if self.reduce == "mean":
            total = torch.zeros(ctx.batch_size, device=gap.device).index_add_(0, r, gap)
            row_gap = total / monitored.sum(-1).clamp(min=1)
        else:
            row_gap = torch.full((ctx.batch_size,), float("inf"), device=gap.device).scatter_reduce(
                0, r, gap, reduce="amin")
        st["gap"] = torch.where(rows, row_gap, st["gap"])
        fire = rows & (row_gap >= prophet_threshold(ctx.progress, self.thresholds).to(row_gap))
        if bool(fire.any()):
            allin = monitored & fire[:, None]
            decision.commit = decision.commit | allin
            st["fired"] |= fire
        return decision
