"""``wino`` (WINO, docs/methods.md#wino): draft wide with a low threshold, verify every earlier commit of the block
with a higher one, and remask the commits that fail verification (revocable decoding).

Rule, per step and row (block ``[s, e)``, ``m`` undecided positions in it before the step):

* **Wide in** (``WideIn``, the selector): commit every candidate whose top-1 probability is ``> threshold``
  (strict, as the reference); when more than ``cap = min(max(floor(accept_share * m), accept_min), accept_max)``
  qualify, only the ``cap`` most confident; when none does, the single most confident.
* **Narrow out** (``NarrowOut``, a modifier): each position of the block decided *before* this step gets a
  verification score, the probability its *shadow* gives the token it holds (below). Only when this step accepted
  more than one token, the positions scoring ``< threshold_back`` are remasked; when there are at least
  ``last_accept`` of them (the number the row accepted at its previous step, 30 at a block's first step), only the
  ``last_accept - 1`` lowest. A remasked position is a candidate again from the next step on.

Why this terminates: a step remasks at most ``last_accept - 1`` positions, one fewer than the previous step
committed, and nothing when it commits one; so after ``T`` steps a block has at least ``D_0 - r_1 + T >= T``
positions decided (``D_0``: decided when it opened; ``r_1 <= D_0``: what its first step remasked). The engine's
guard (after ``k`` steps in a block at least ``k`` of its positions stay decided, docs/design.md#remasking)
never binds for this rule.

**The shadow block.** The reference appends ``K = e - s`` mask tokens to the canvas that take the block's
position ids; real positions never attend to them, shadow ``i`` attends to everything except its twin, the real
position ``s + i``, and sees the other shadows. Its prediction at the twin's token is the twin's verification
score: a leave-one-out view of the token in which every other position still saw it. This engine's attention takes
a key mask per row, not per query, so ``ShadowVerifier`` (the cache manager the engine sees, installed by
``NarrowOut.wrap_cache``) realises the same attention as a second model call: one single-token row per shadow
(``K`` rows per verified batch row), each attending over its batch row's keys/values *of this step's forward* at
every layer (the KV store of a ``prefix``/``dual``/``delayed`` cache, or the K/V kept from the full forward with
``none``) with its twin hidden, plus the ``K`` shadows' own keys/values of that layer, which the K/V hook shares
between the shadow rows. Row ``i`` computes only shadow ``i`` correctly and its keys/values are the ones handed to
the other rows, so layer by layer every shadow sees exactly what the reference's shadow sees (tested against a
per-query attention mask on the tiny model).

Paper: *Wide-In, Narrow-Out: Revokable Decoding for Efficient and Effective DLLMs*, Hong, Yu, et al., ICLR 2026
(arXiv 2507.18578). Authors' code: ``Feng-Hong/WINO-DLLM`` (``LLaDA/decoding.py``, ``decoding_wino``; threshold
0.6 and threshold_back 0.9 by default and for GSM8K, 0.5-0.8 on other tasks; 256 tokens in blocks of 128).

**Quirks.**

* Wide-in threshold 0.7 by default; the reference's signature and its GSM8K setting are 0.6 (``threshold=0.6``),
  its other tasks 0.5-0.8, and Saber's repository runs its WINO baseline with 0.7 / 0.9. At 0.6 this project's
  synthetic suite loses 2.9 points to threshold 0.9 (``dllm eval --bench synthetic --policy wino --sweep
  threshold=0.6,0.65,0.7 --limit 40``: 97.1% / 98.8% / 100%, all at 2.9 NFE; the losses are ``shuffle``
  examples, whose characters the model is least sure of), past the one point a research policy may lose at
  its default here.
* The shadows run as a second model call of the step (``cache_stats["shadow_calls"]``, ``shadow_positions`` per
  prompt), only for rows that accepted more than one token and have something to verify (the reference computes
  every shadow every step and reads them only then: same decisions). ``seq_nfe`` counts one forward per step, as
  the reference's one forward with the shadow block inside.
* Under a KV cache the shadows attend over what the step's real queries attended over (stale K/V included), so
  ``refresh=1`` gives the ``none`` tokens and a cached step verifies against the cached view.
* Probabilities in float32 (the reference: float64); confidence ties go to the lower position (``torch.topk``'s
  order in the reference is unspecified).
* Per row and batched; the reference decodes one prompt (its ``max_accept`` counts the batch's masks).
* LLaDA-style models only: Dream predicts a position from the one before it, which a shadow mask at the position
  does not model; ``generate`` refuses Dream in one line. A third-party cache is refused too (its K/V are unknown).
* ``stop_at_eos`` (the default) ends a row once its end token is decided with everything before it: those
  tokens are no longer verified. The reference decodes every block to the end (``stop_at_eos=False``).
* With ``batch_size`` smaller than the prompts, continuous batching decodes ``wino`` in static batches (same
  tokens), as ``freedave``.
* ``early_commit`` and ``eotp`` build (every policy takes them) but ``generate`` refuses them in one line: narrow-out
  could remask part of Prophet's all-in commit in the same step (its ``fired`` flag would stay set) or revoke end
  tokens EoTP committed. The reference has neither.
* ``cache_stats["remasked"]`` counts the remasks the engine applied (``on_remask``), not what narrow-out asked
  for: the engine drops a row's remasks when a modifier finishes the row or its loop guard binds (neither happens
  with ``wino`` alone).
* Memory: this engine's attention takes a key mask per row, so each shadow row carries its own copy of its batch
  row's keys and values. Per layer the shadow pass materialises K and V of ``[K, Hkv, L + K, D]`` per verified row
  (written in place, no gathered intermediate; freed after the layer). LLaDA-8B (32 KV heads, head dim 128,
  bfloat16), block 128, canvas ``L`` ~ 600: 128 * 32 * 728 * 128 * 2 B ~ 0.76 GB each, ~1.5 GB per verified row
  at a time (~12 GB for 8). The reference's per-query mask needs none of it; avoiding the copies needs an
  attention with per-query key masks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dllm.cache.base import ManagerWrapper, NoCache, scatter_rows
from dllm.cache.managers import KVStoreCache
from dllm.errors import DllmError
from dllm.registry import Option
from dllm.samplers.base import Decision, Policy, PolicyState, Proposal, StepContext
from dllm.samplers.eotp import EndOfTextPrediction
from dllm.samplers.policies.common import refuse_modifiers
from dllm.samplers.prophet import EarlyCommit
from dllm.samplers.registry import POLICIES, TEMPERATURE
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import most_confident, top_k_mask

KEY = "wino"
#: the options ``wino`` runs with (the common ``early_commit`` and ``eotp`` groups are refused)
OWN_OPTIONS = ("threshold", "threshold_back", "accept_share", "accept_min", "accept_max", "temperature")
#: (piece, its option, what narrow-out would undo): refused by ``NarrowOut.check_policy``
REFUSED_PIECES = ((EarlyCommit, "early_commit", "narrow-out could remask part of Prophet's all-in commit in the same "
                                                "step"),
                  (EndOfTextPrediction, "eotp", "narrow-out could remask the end tokens EoTP committed"))
#: ``last_accept`` at a block's first step (the reference's initial value)
FIRST_LAST_ACCEPT = 30


class WideIn:
    """Commit candidates with confidence ``> threshold``, at most ``min(max(floor(share * m), low), high)`` of
    them (the most confident; ``m`` = the row's candidates), at least the most confident one."""

    def __init__(self, threshold: float, share: float, low: int, high: int) -> None:
        self.threshold, self.share, self.low, self.high = float(threshold), float(share), int(low), int(high)

    def cap(self, masked: Tensor) -> Tensor:
        """[B] most commits of a step for ``masked`` [B] candidates (float32 product, as the reference)."""
        return (masked.to(torch.float32) * self.share).floor().long().clamp(min=self.low).clamp(max=self.high)

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        conf = proposal.confidence  # [B, W], -inf off candidates
        above = (conf > self.threshold) & ctx.candidates
        count = above.sum(-1)
        cap = self.cap(ctx.candidates.sum(-1))
        take = torch.where((count > cap)[:, None], top_k_mask(conf, cap), above)
        return take | (most_confident(conf) & (count == 0)[:, None])


class ShadowVerifier(ManagerWrapper):
    """The cache manager ``wino``'s engine sees: the engine's own manager (``none`` or a ``KVStoreCache``) plus
    the shadow pass. ``logits`` runs the step's forward and keeps where its keys/values are; ``verify`` runs the
    shadows of some rows against them. ``calls``, ``nfe`` and the forward counters are the inner manager's;
    ``stats`` adds ``shadow_calls``, ``shadow_positions`` and ``remasked`` (per row: the remasks the engine
    applied, counted by ``NarrowOut.on_remask``)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        b = inner.key_mask.shape[0]
        self.kv: tuple[list[Tensor], list[Tensor]] | None = None  #: per layer [R, Hkv, L, D] of the last forward
        self.kv_row = torch.arange(b, device=inner.key_mask.device)  #: [B] row of ``kv`` holding each batch row
        self.shadow_calls = 0
        self.shadow_positions = torch.zeros(b, dtype=torch.long)
        self.remasked = torch.zeros(b, dtype=torch.long)

    def extra_stats(self) -> dict[str, Any]:
        return {"shadow_calls": self.shadow_calls, "shadow_positions": self.shadow_positions.tolist(),
                "remasked": self.remasked.tolist()}

    def logits(self, canvas: Tensor, active: Tensor, block_start: Tensor, block_end: Tensor,
               window: tuple[int, int]) -> Tensor:
        if isinstance(self.inner, KVStoreCache):  # the store holds what this step's queries attended over
            out = self.inner.logits(canvas, active, block_start, block_end, window)
            self.kv = (self.inner.keys, self.inner.values)
            return out
        ridx = active.nonzero().squeeze(1)
        km = self.inner.key_mask[ridx]
        keys: list[Tensor] = [None] * self.model.num_layers  # type: ignore[list-item]
        values: list[Tensor] = [None] * self.model.num_layers  # type: ignore[list-item]

        def keep(layer: int, k: Tensor, v: Tensor):
            keys[layer], values[layer] = k, v
            return k, v, km

        out = self.inner.full_forward(canvas, active, window, kv_hook=keep)
        self.kv = (keys, values)
        self.kv_row = torch.full_like(self.kv_row, -1)
        self.kv_row[ridx] = torch.arange(ridx.numel(), device=ridx.device)
        return scatter_rows(out, active, canvas.shape[0])

    def verify(self, ctx: StepContext, rows: Tensor) -> Tensor:
        """[B, W]: for ``rows`` [B] bool, the probability each position of the row's block gives the token it
        holds (``ctx.tokens``) under its shadow; +inf elsewhere. Reads the keys/values of this step's forward."""
        assert self.kv is not None, "verify runs after the step's forward"
        b, w = ctx.tokens.shape
        ws = ctx.window_start
        ridx = rows.nonzero().squeeze(1)
        start, length = ctx.block_start[ridx], ctx.block_end[ridx] - ctx.block_start[ridx]
        kmax = int(length.max())
        slot_ok = torch.arange(kmax, device=ridx.device)[None, :] < length[:, None]  # [R, K]
        q_local, q_slot = slot_ok.nonzero(as_tuple=True)  # one shadow per block position: [Q]
        q_row = ridx[q_local]
        twin = start[q_local] + q_slot  # canvas column of each shadow's twin
        key_mask = self.inner.key_mask
        total = key_mask.shape[1]
        cols = torch.arange(total, device=ridx.device)
        # shadow q attends over its row's keys except the twin, then over the row's shadows (the valid slots)
        km = torch.cat([key_mask[q_row] & (cols[None, :] != twin[:, None]), slot_ok[q_local]], dim=1)
        spans = [0, *length.cumsum(0).tolist()]  # the shadows of verified row j are q in [spans[j], spans[j + 1])
        srcs = self.kv_row[ridx].tolist()  # row of ``self.kv`` holding verified row j
        keys, values = self.kv

        def hook(layer: int, k: Tensor, v: Tensor):  # k, v [Q, Hkv, 1, D]: the shadows' own at this layer
            out = []
            for store, fresh in ((keys[layer], k), (values[layer], v)):
                # [Q, Hkv, L + K, D] written in place: the row's store broadcast to its shadows, then its shadows
                # (the one copy per shadow the per-row key mask needs; no gathered intermediate, module Quirks)
                kv = fresh.new_empty((fresh.shape[0], fresh.shape[1], total + kmax, fresh.shape[3]))
                for j, src in enumerate(srcs):
                    a, e = spans[j], spans[j + 1]
                    kv[a:e, :, :total] = store[src]
                    kv[a:e, :, total:total + e - a] = fresh[a:e, :, 0].transpose(0, 1)
                    kv[a:e, :, total + e - a:] = 0  # empty slots: masked, but must be finite
                out.append(kv)
            return out[0], out[1], km

        x = torch.full((q_row.numel(), 1), self.model.mask_id, dtype=torch.long, device=ridx.device)
        pos = self.inner.positions[q_row, twin][:, None]
        logits = self.model(x, pos, None, hook, logits_index=slice(0, 1))[:, 0]  # [Q, V]
        self.shadow_calls += 1
        self.shadow_positions += torch.bincount(q_row.cpu(), minlength=b)
        held = ctx.tokens[q_row, twin - ws]
        prob = torch.softmax(logits.float(), dim=-1).gather(-1, held[:, None]).squeeze(-1)
        out = torch.full((b, w), float("inf"), device=ctx.tokens.device)
        out[q_row, twin - ws] = prob
        return out


def check_model_and_cache(cache: Any) -> None:
    """One error line unless the model predicts each position from itself and the cache's K/V are known."""
    if cache.model.logit_shift:
        raise DllmError("wino needs a model without logit shift (LLaDA): its shadow mask verifies a token at its own "
                        "position, and Dream predicts a position from the one before it")
    if not isinstance(cache, (NoCache, KVStoreCache)):
        raise DllmError(f"wino runs with cache none, prefix, dual or delayed (its shadows read the step's keys and "
                        f"values), got cache {getattr(cache, 'name', type(cache).__name__)!r}")


class NarrowOut:
    """Remask the earlier commits of the block whose shadow verification is ``< threshold_back`` (a ``Modifier``;
    per-row ``last_accept`` under ``PolicyState`` key ``wino``). Wraps the engine's cache manager in a
    ``ShadowVerifier`` (``wrap_cache``)."""

    def __init__(self, threshold_back: float) -> None:
        self.threshold_back = float(threshold_back)

    def init_state(self, state: PolicyState) -> None:
        state.values[KEY] = {"last_accept": torch.full((state.batch_size,), FIRST_LAST_ACCEPT, dtype=torch.long,
                                                       device=state.device)}

    def on_block_start(self, state: PolicyState, rows: Tensor) -> None:
        st = state.values[KEY]
        st["last_accept"] = torch.where(rows, torch.full_like(st["last_accept"], FIRST_LAST_ACCEPT),
                                        st["last_accept"])

    def check_policy(self, policy: Policy) -> None:
        refuse_modifiers("wino", policy, REFUSED_PIECES, OWN_OPTIONS)

    def wrap_cache(self, cache: Any, cache_factory: Any, state: PolicyState, policy: Policy) -> Any:
        check_model_and_cache(cache)
        state.values[KEY]["verifier"] = verifier = ShadowVerifier(cache)
        return verifier

    def __call__(self, decision: Decision, proposal: Proposal, logits: Tensor, ctx: StepContext,
                 state: PolicyState) -> Decision:
        st = state.values[KEY]
        last = st["last_accept"]
        accepted = decision.commit.sum(-1)  # [B] this step's wide-in commits
        cols = torch.arange(ctx.tokens.shape[1], device=ctx.tokens.device) + ctx.window_start
        in_block = (cols >= ctx.block_start[:, None]) & (cols < ctx.block_end[:, None])
        verified = in_block & ~ctx.undecided & ctx.active[:, None]  # decided before this step
        rows = ctx.active & (accepted > 1) & verified.any(-1) & (self.threshold_back > 0)
        remask = torch.zeros_like(decision.commit)
        verifier: ShadowVerifier | None = st.get("verifier")
        if verifier is not None and bool(rows.any()):
            score = torch.where(verified, verifier.verify(ctx, rows), float("inf"))  # [B, W]
            remask = (score < self.threshold_back) & rows[:, None]
            lowest = top_k_mask(torch.where(verified, -score, float("-inf")), (last - 1).clamp(min=0))
            remask = torch.where((remask.sum(-1) >= last)[:, None], lowest & rows[:, None], remask)
        st["last_accept"] = torch.where(ctx.active, accepted, last)
        decision.remask = remask
        return decision

    def on_remask(self, state: PolicyState, remask: Tensor) -> None:
        """``remask`` [B, W]: what the engine applied of this step's request (it drops a row's remasks when a
        modifier finishes the row or its loop guard binds), counted in the verifier's ``remasked``."""
        verifier: ShadowVerifier | None = state.values[KEY].get("verifier")
        if verifier is not None:
            verifier.remasked += remask.sum(-1).cpu()


@POLICIES.register(
    "wino", "WINO: commit above a low threshold, remask earlier commits of the block whose leave-one-out "
            "(shadow) confidence is below a high one (revocable)",
    options=[
        Option("threshold", 0.7, "wide in: commit candidates with confidence > threshold (at least one); the "
               "reference's default is 0.6", kind=float, low=0, high=1),
        Option("threshold_back", 0.9, "narrow out: remask earlier commits whose shadow confidence is < this "
               "(0 = never remask)", kind=float, low=0, high=1),
        Option("accept_share", 0.7, "a step commits at most this share of the block's undecided positions, "
               "floored, clamped to [accept_min, accept_max]", kind=float, low=0, low_open=True, high=1),
        Option("accept_min", 5, "lower clamp of the per-step commit cap", kind=int, low=1),
        Option("accept_max", 20, "upper clamp of the per-step commit cap", kind=int, low=1),
        TEMPERATURE,
    ])
def wino(threshold: float = 0.7, threshold_back: float = 0.9, accept_share: float = 0.7, accept_min: int = 5,
         accept_max: int = 20, temperature: float = 0.0) -> Policy:
    if accept_min > accept_max:
        raise DllmError(f"accept_min {accept_min} must be <= accept_max {accept_max}")
    return Policy("wino", ProbabilityScorer(temperature), WideIn(threshold, accept_share, accept_min, accept_max),
                  modifiers=[NarrowOut(threshold_back)],
                  options={"threshold": threshold, "threshold_back": threshold_back, "accept_share": accept_share,
                           "accept_min": accept_min, "accept_max": accept_max, "temperature": temperature})
