"""``klass`` (KLASS, docs/methods.md#klass): commit the candidates that are both confident and *stable*, whose
predictive distribution has barely moved over the last steps; otherwise fall back to LLaDA's quota.

Rule, per step and row. For every candidate (undecided position of the current block) ``i``, ``p_t`` is the
softmax of its logits over the whole vocabulary and ``KL_t(i) = sum_v p_t(v) log(p_t(v) / p_{t-1}(v))`` compares
it with the previous step of the same row; a position's first KL is infinite (no previous distribution). The
last ``H = kl_history`` (2) KLs are kept per position. ``stable(i)`` = all ``H`` kept KLs are
``< kl_threshold`` (0.01); ``ready = stable & (c_i > conf_threshold) & candidate`` with ``c_i`` the top-1
probability (``conf_threshold`` 0.9). If any candidate is ready, exactly the ready ones are committed (the
reference's ``unmask_strategy="all"``); otherwise LLaDA's quota for the step (``QuotaSelector``: the
top-``q_i`` by confidence with the block's step budget ``S_b``), at least one. A token is committed only when
it is confident and the model has stopped changing its mind about it; the paper reports higher accuracy than
greedy top-k at about half the steps.

Paper: *KLASS: KL-Guided Fast Inference in Masked Diffusion Models* (KL-Adaptive Stability Sampling), Kim,
Hong, Jung, Park and Yun, NeurIPS 2025 (arXiv 2511.05664). Authors' code: ``shkim0116/KLASS``
(``src/model/llada_klass.py``; function defaults ``conf_threshold`` 0.9, ``kl_threshold`` 0.01,
``history_length`` 2; its scripts use 0.6-0.9 and 0.01-0.015 per task).

Pieces: ``KLStability`` (here), a logits processor that updates the KL history in the ``PolicyState`` and
leaves the stable mask there (it returns the logits unchanged); ``ProbabilityScorer`` (float32 top-1
probability); ``KLASSSelector`` (here), ready positions or the quota.

**Quirks.**

* History per block. The reference computes ``p_t`` and the KL for every canvas position at every step and keeps
  a rolling buffer per canvas position that is never reset, together with the condition "in-block step index
  ``>= H - 1``". dllm keeps the previous distribution only for the row's current block's undecided positions
  (all that the rule reads, and all that the engine computes logits for with the ``block`` window), keyed by the
  position's offset in the row's block (absolute canvas position minus block start), so the window moving
  between steps or blocks, or covering other rows' blocks in a batch, changes nothing. A block's positions
  therefore enter it without history: their first KL in the block is infinite, and the earliest stable step of a
  block is ``H`` (the step-index condition is then always met and is not checked). In the reference's later
  blocks a position already has the distribution of the previous block's last step, so it can be stable at step
  ``H - 1``: dllm may take one more step per block, and NFE can differ there.
* Memory: the previous step's distribution of the block positions, float32, ``[B, K, V]`` (16 MB per row for
  LLaDA's 126,464-token vocabulary and ``K = 32``), plus ``[B, K, H]`` KLs. The reference keeps float64
  distributions of the whole canvas (about 0.5 GB at 512 positions).
* Precision: log-probabilities and KLs in float32 (``log_softmax``, so an underflowed probability is a very
  negative log-probability, not a 0 that turns the KL into inf or nan); the reference uses float64. Only KLs
  within float32 rounding of ``kl_threshold`` can decide differently.
* The KL uses the model's distribution at temperature 1 whatever ``temperature`` is (the temperature only
  changes the proposed tokens and their confidence, as for every policy here).
* The fallback quota is at least one and the block goes on until it is decided. The reference bounds a block
  by ``S_b`` iterations, which can leave masks when ready steps committed fewer positions than the quota would
  have; here such a block takes extra steps instead.
* Not implemented: the reference's other ``unmask_strategy`` values (only the most confident ready position, or
  only the one with the smallest KL).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.registry import Option
from dllm.samplers.base import Policy, PolicyState, Proposal, StepContext
from dllm.samplers.registry import POLICIES, TEMPERATURE
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import llada_quota, top_k_mask

KEY = "klass"


class KLStability:
    """Logits processor: per candidate, the KL between this step's and the previous step's distribution, the last
    ``history`` of them, and whether all are ``< kl_threshold``. State under ``state.values["klass"]``:

    * ``logp``   [B, K, V] float32: previous step's log-probabilities per block offset (allocated on first use)
    * ``seen``   [B, K] bool: the offset has a previous distribution in this block
    * ``kl``     [B, K, H] float32: the last ``H`` KLs per block offset, oldest first (+inf = none yet)
    * ``stable`` [B, W] bool: this step's result in window columns, read by ``KLASSSelector``
    """

    def __init__(self, kl_threshold: float = 0.01, history: int = 2) -> None:
        self.kl_threshold = float(kl_threshold)
        self.history = int(history)

    def init_state(self, state: PolicyState) -> None:
        b, dev = state.batch_size, state.device
        state.values[KEY] = {
            "logp": torch.zeros((b, 0, 0), dtype=torch.float32, device=dev),
            "seen": torch.zeros((b, 0), dtype=torch.bool, device=dev),
            "kl": torch.full((b, 0, self.history), float("inf"), device=dev),
            "stable": None,
        }

    def on_block_start(self, state: PolicyState, rows: Tensor) -> None:
        st = state.values[KEY]
        st["seen"][rows] = False
        st["kl"][rows] = float("inf")

    @staticmethod
    def _fit(st: dict, length: int, vocab: int) -> None:
        """Grow the per-offset buffers to ``length`` block offsets (adaptive blocks can be longer than the first)."""
        logp, seen, kl = st["logp"], st["seen"], st["kl"]
        b, k0, v0 = logp.shape
        if length <= k0 and vocab == v0:
            return
        k1 = max(length, k0)
        new_logp = torch.zeros((b, k1, vocab), dtype=logp.dtype, device=logp.device)
        new_seen = torch.zeros((b, k1), dtype=seen.dtype, device=seen.device)
        new_kl = torch.full((b, k1, kl.shape[2]), float("inf"), dtype=kl.dtype, device=kl.device)
        if vocab == v0:
            new_logp[:, :k0] = logp
            new_seen[:, :k0] = seen
        new_kl[:, :k0] = kl
        st["logp"], st["seen"], st["kl"] = new_logp, new_seen, new_kl

    def __call__(self, logits: Tensor, ctx: StepContext, state: PolicyState) -> Tensor:
        st = state.values[KEY]
        cand = ctx.candidates  # [B, W]
        stable = torch.zeros_like(cand)
        st["stable"] = stable
        if not bool(cand.any()):
            return logits
        self._fit(st, int((ctx.block_end - ctx.block_start).max()), logits.shape[-1])
        rows, cols = cand.nonzero(as_tuple=True)  # [N] each
        offsets = ctx.window_start + cols - ctx.block_start[rows]  # [N] offset inside the row's block
        logp = torch.log_softmax(logits[rows, cols].float(), dim=-1)  # [N, V]
        kl_now = (logp.exp() * (logp - st["logp"][rows, offsets])).sum(-1)  # [N]
        kl_now = torch.where(st["seen"][rows, offsets], kl_now, torch.full_like(kl_now, float("inf")))
        kept = torch.cat([st["kl"][rows, offsets, 1:], kl_now[:, None]], dim=-1)  # [N, H]
        st["kl"][rows, offsets] = kept
        st["logp"][rows, offsets] = logp
        st["seen"][rows, offsets] = True
        stable[rows, cols] = (kept < self.kl_threshold).all(-1)
        return logits


class KLASSSelector:
    """Commit the ready candidates (stable per ``KLStability`` and confidence ``> conf_threshold``) if any,
    else LLaDA's quota of most confident candidates (at least one)."""

    def __init__(self, conf_threshold: float = 0.9) -> None:
        self.conf_threshold = float(conf_threshold)

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        conf = proposal.confidence  # [B, W]
        ready = state.values[KEY]["stable"] & ctx.candidates & (conf > self.conf_threshold)  # [B, W]
        quota = top_k_mask(conf, llada_quota(ctx.block_mask_count, ctx.block_steps, ctx.step).clamp(min=1))
        return torch.where(ready.any(-1, keepdim=True), ready, quota)


@POLICIES.register(
    "klass", "KLASS: commit confident tokens whose distribution is stable (KL to the previous steps below "
             "kl_threshold), else the lowconf quota",
    options=[
        Option("conf_threshold", 0.9, "a stable candidate commits when its confidence is > conf_threshold",
               kind=float, low=0, high=1),
        Option("kl_threshold", 0.01, "stable: each of the last kl_history KLs (nats) is < kl_threshold", kind=float,
               low=0, low_open=True),
        Option("kl_history", 2, "how many consecutive KLs must be below kl_threshold", kind=int, low=1),
        TEMPERATURE,
    ])
def klass(conf_threshold: float = 0.9, kl_threshold: float = 0.01, kl_history: int = 2,
          temperature: float = 0.0) -> Policy:
    return Policy("klass", ProbabilityScorer(temperature), KLASSSelector(conf_threshold),
                  processors=[KLStability(kl_threshold, kl_history)],
                  options={"conf_threshold": conf_threshold, "kl_threshold": kl_threshold,
                           "kl_history": kl_history, "temperature": temperature})
