"""End-of-Text Prediction (EoTP, Learn2PD; docs/methods.md#learn2pd) as a ``Modifier``.

Every step, after the base policy decided, look at the row's undecided generated positions whose proposed
token is EOS (``<|endoftext|>``, the padding LLaDA writes after an answer) and pick a cut ``p*``:

* ``"reference"``: the reference rule. ``p*`` is the position with the highest EOS probability, with the
  probabilities rounded to bfloat16 first, so near-certain EOS predictions tie at 1.0 and the **leftmost**
  wins (the reference decodes in bf16 and its reported speedups rely on exactly that tie-breaking). If a
  learned filter (``learnedfilter``) accepted EOS positions this step, the leftmost of those is the cut
  instead (the reference's L2P+EoT rule). Everything *after* ``p*`` becomes EOS; ``p*`` itself stays
  undecided (unless committed this step) and is decoded later. No confidence threshold.
* ``"threshold"`` (safer): ``p*`` is the leftmost undecided position whose proposed token is EOS with
  probability ``>= eotp_threshold`` (default 0.9); ``p*`` and everything after it become EOS.

Positions after the cut are committed as EOS in this step's decision (overriding what the base policy
proposed there, like the reference's truncation deletes them), and ``Decision.finish`` is set for rows
with nothing undecided left before the cut, so the engine closes them without another forward.

**Quirk**: the reference shrinks the canvas, so the model stops seeing the cut positions at all; the
engine keeps a fixed canvas and the cut positions are fed as EOS tokens (what LLaDA pads answers with).
The NFE effect is the same (no forward is spent on the cut tail); the per-forward cost is not reduced.
EoTP reads logits for every undecided generated position (the policy's window becomes ``"answer"``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.errors import DllmError
from dllm.samplers.base import Decision, PolicyState, Proposal, StepContext

KEY = "eotp"
MODES = ("reference", "threshold")
#: state key where a learned filter leaves this step's accepted positions (window coordinates)
FILTER_ACCEPT_KEY = "learnedfilter.accepted"


def eos_probability(logits: Tensor, positions: Tensor, eos: int) -> Tensor:
    """[B, W] float32 EOS probability at ``positions`` (fp32 softmax), -inf elsewhere."""
    out = torch.full(positions.shape, float("-inf"), device=logits.device)
    if bool(positions.any()):
        sel = logits[positions].float()
        out[positions] = torch.exp(sel[:, eos] - torch.logsumexp(sel, dim=-1))
    return out


def first_true(mask: Tensor) -> Tensor:
    """[B] index of the first True per row (the row length when there is none)."""
    w = mask.shape[1]
    idx = torch.arange(w, device=mask.device).expand_as(mask)
    return torch.where(mask, idx, torch.full_like(idx, w)).amin(-1)


class EndOfTextPrediction:
    def __init__(self, mode: str = "threshold", threshold: float = 0.9) -> None:
        if mode not in MODES:
            raise DllmError(f"unknown eotp mode {mode!r}; choose one of: {', '.join(MODES)} (or None to disable)")
        self.mode = mode
        self.threshold = float(threshold)

    def init_state(self, state: PolicyState) -> None:
        # cut[b]: generation offset of the last cut (-1: none yet)
        state.values[KEY] = {"cut": torch.full((state.batch_size,), -1, dtype=torch.long, device=state.device)}

    def __call__(self, decision: Decision, proposal: Proposal, logits: Tensor, ctx: StepContext,
                 state: PolicyState) -> Decision:
        eos = ctx.special.eos
        und = ctx.undecided & ctx.active[:, None]
        pred = und & (proposal.tokens == eos)
        if not bool(pred.any()):
            return decision
        w = und.shape[1]
        cols = torch.arange(w, device=und.device)
        conf = eos_probability(logits, pred, eos)
        if self.mode == "reference":
            rounded = torch.where(pred, conf.to(torch.bfloat16).float(), conf)
            has = pred.any(-1)
            cut = rounded.argmax(-1)  # first index among (bf16) ties
            accepted = state.values.get(FILTER_ACCEPT_KEY)
            if accepted is not None and accepted.shape == pred.shape:
                acc = accepted & pred
                cut = torch.where(acc.any(-1), first_true(acc), cut)
            tail = und & has[:, None] & (cols[None, :] > cut[:, None])
        else:
            ok = pred & (conf >= self.threshold)
            has = ok.any(-1)
            cut = first_true(ok)
            tail = und & has[:, None] & (cols[None, :] >= cut[:, None])
        if not bool(has.any()):
            return decision
        decision.commit = decision.commit | tail
        decision.tokens = torch.where(tail, torch.full_like(decision.tokens, eos), decision.tokens)
        st = state.values[KEY]
        st["cut"] = torch.where(has, ctx.window_start - ctx.gen_start + cut, st["cut"])
        left = und & ~decision.commit
        finish = has & ctx.active & ~left.any(-1)
        decision.finish = finish if decision.finish is None else (decision.finish | finish)
        return decision
