"""``saber`` (Saber, docs/methods.md#saber): commit above a threshold that adapts to how confident the row's earlier
commits were, then take back the committed tokens whose confidence fell most since the previous step (revocable
decoding).

Rule, per step and row (block ``[s, e)``). ``c_i`` is the top-1 probability at every position of the block, decided
or not (for a candidate: the scorer's confidence in its proposed token); ``rec`` holds, per generated position, the
confidence it had when it was last committed.

* **Adaptive threshold** (``AdaptiveThreshold``, the selector): ``tau`` = the mean of the row's ``rec`` entries, 1.0
  when it has none. Commit every candidate with ``c_i > tau`` (strictly, as the reference); when fewer than ``n``
  qualify, the ``n`` most confident candidates instead (all of them when fewer than ``n`` are left).
* **Backtracking remask** (``Backtrack``, a modifier): record ``rec_i = c_i`` for every position committed now. If
  the block still has an undecided position after these commits, ``fix = max(n, committed this step)`` and
  ``r = min(max(floor(n / 2), ceil(fix / mu)), fix - 1)``; among the block's decided positions (this step's commits
  included) the ``r`` with the most negative ``delta_i = c_i - c_i(previous step)`` are set back to the mask
  (``c(previous step)`` is 0 at a block's first step). ``rec`` is *not* cleared for a remasked position (the
  reference's bookkeeping): its old commit-time confidence stays in the mean until it is committed again.

Why this terminates: ``r <= fix - 1`` and a step that remasks committed at least ``n`` (fewer only when it took the
block's last candidates, and then nothing is remasked), so every step leaves at least one more position of the
block decided. A block of ``K`` positions closes within ``K`` steps and the engine's loop guard (after ``k`` steps
in a block at least ``k`` of its positions stay decided, docs/design.md#remasking) never binds. At the defaults a
step that commits up to 8 tokens remasks one (none at ``n`` = 1 when it commits one), 9 to 16 two, and so on.

Paper: *Saber: An Efficient Sampling with Adaptive Acceleration and Backtracking Enhanced Remasking for Diffusion
Language Model*, Dong, Ma, Jiang, et al. (arXiv 2510.18165). Authors' code: ``zhaoyMa/Saber`` (``decoding.py``,
``generate_with_saber``; ``n`` 2, ``mu`` 8, temperature 0, 256 tokens in one block of 256, batch 1).

**Quirks.**

* ``n`` = 1 by default; the reference's is 2 (``n=2``). On the synthetic suite (``dllm eval --bench synthetic
  --policy threshold,saber --limit 20``) n = 2 scores 85.8% at 15.0 NFE (``shuffle`` 15%) against threshold
  0.9's 100% at 2.0: the tiny model's confidences sit at about 1.0, so almost nothing passes the adaptive
  threshold, every step commits the top two and takes one back, and two characters written in the same forward
  often repeat. n = 1 scores 100% (one token a step there, as nothing passes) and keeps the rule: a step where
  ``fix`` tokens pass still takes back ``ceil(fix / mu)``. That is within the one point of threshold 0.9 that a
  research policy may lose at its default here (``tests/test_policy_defaults.py``).
* Blocks. The reference decodes one block of the whole generation (its default and every config), and that is
  where this module matches it exactly (``block_length = gen_length``). With smaller blocks, fixed or adaptive,
  confidences, deltas and remask candidates are the row's current block only (the engine remasks nothing else),
  and a block's first step compares with 0 as the reference's first block does. The reference's own multi-block
  path differs: its remask candidates are every decided position before the block's end, earlier blocks
  included, and at a later block's first step the new block's deltas are infinite, so that step remasks tokens of
  earlier blocks. The threshold mean reads the row's entries of earlier blocks too, as the reference's.
* A token that a step commits and the same step's backtrack picks is never written: the commit is dropped
  (``Decision.commit``) instead of asking the engine for a remask, which the engine only applies to positions
  decided before the step. The canvas and ``rec`` are those of the reference (commit, record, remask); the trace
  shows neither the commit nor the remask of such a token.
* The top-``n`` fallback takes only candidates. The reference's ``topk`` over its confidences reaches past them
  when fewer than ``n`` masks are left (into decided or prompt positions, recording a prompt position's
  probability in the mean); here the last candidates are committed and, the block being full, nothing is remasked.
* Temperature > 0: a candidate's confidence is the probability of its sampled token (the reference's), a decided
  position's is its top-1 probability (the reference samples a token there too and reads that one's probability).
* Probabilities in float32 (the reference: softmax in the model's dtype, bfloat16 for LLaDA-8B, with ``rec`` and the
  mean in float32); ties go to the lower position (``torch.topk``'s order in the reference is unspecified).
* Per row and batched, the state (``rec``, previous confidences) per row; the reference decodes one prompt.
  Continuous batching refills ``saber``'s rows like any other policy's (its state is reset at a row's first step).
* ``stop_at_eos`` (the default) ends a row once its end token is decided with everything before it, so those
  tokens are no longer open to backtracking; the reference decodes every position (``stop_at_eos=False``).
* The loop guard never binds (above). If it did, the engine would drop that step's remasks of earlier commits but
  not the dropped same-step commits; the recorded entries stay either way.
* Caches: every cached step computes logits for the whole block (``prefix`` and ``dual`` recompute it, ``delayed``
  recomputes a position that holds the mask again), so confidences and deltas of decided positions come from the
  cached forward; ``refresh=1`` gives the ``none`` tokens. The reference has no cache.
* The step budget (``steps``) is not used, as with ``threshold``; the reference loops up to 1024 steps per block.
* Dream (logit shift) runs too: the confidences are read from the engine's aligned logits. The reference is
  LLaDA code.
* ``early_commit`` and ``eotp`` build (every policy takes them) but ``generate`` refuses them in one line: they run
  after the backtrack, so Prophet's all-in would recommit the tokens the step just took back while the remasks of
  earlier commits still apply, and the backtrack could revoke end tokens EoTP committed. The reference has
  neither.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.registry import Option
from dllm.samplers.base import Decision, Policy, PolicyState, Proposal, StepContext
from dllm.samplers.eotp import EndOfTextPrediction
from dllm.samplers.policies.common import refuse_modifiers
from dllm.samplers.prophet import EarlyCommit
from dllm.samplers.registry import POLICIES, TEMPERATURE
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import top_k_mask

KEY = "saber"
#: the options ``saber`` runs with (the common ``early_commit`` and ``eotp`` groups are refused)
OWN_OPTIONS = ("n", "mu", "temperature")
#: (piece, its option, why): refused by ``Backtrack.check_policy``
REFUSED_PIECES = ((EarlyCommit, "early_commit", "its all-in would recommit what the backtrack took back"),
                  (EndOfTextPrediction, "eotp", "the backtrack could revoke the end tokens EoTP committed"))


def row_state(state: PolicyState, ctx: StepContext) -> dict[str, Tensor]:
    """The per-row tensors under ``state.values["saber"]``, in generation coordinates (made on the first step, when
    ``gen_length`` is known): ``recorded`` [B, G] commit-time confidences (NaN: never committed) and ``previous``
    [B, G] the confidences of the row's previous step. A row's first step (first block, step 0: a new prompt, also
    one that continuous batching put into a freed slot) clears its entries; every block's first step zeroes its
    previous confidences."""
    st = state.values[KEY]
    b, g = ctx.batch_size, ctx.gen_length
    if "recorded" not in st:
        st["recorded"] = torch.full((b, g), float("nan"), device=ctx.tokens.device)
        st["previous"] = torch.zeros((b, g), device=ctx.tokens.device)
    opening = ctx.active & (ctx.step == 0)
    st["recorded"][opening & (ctx.block_start == ctx.gen_start)] = float("nan")
    st["previous"][opening] = 0.0
    return st


class AdaptiveThreshold:
    """Commit candidates with confidence ``>`` the mean of the row's recorded commit-time confidences (1.0 when
    there are none); the ``n`` most confident when fewer than ``n`` qualify."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def init_state(self, state: PolicyState) -> None:
        state.values[KEY] = {}

    def threshold(self, recorded: Tensor) -> Tensor:
        """[B] the mean of each row's recorded entries (``recorded`` [B, G], NaN where none), 1.0 for an empty row."""
        return torch.nan_to_num(torch.nanmean(recorded, dim=-1), nan=1.0)

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        st = row_state(state, ctx)
        conf = proposal.confidence  # [B, W], -inf off candidates
        above = (conf > self.threshold(st["recorded"])[:, None]) & ctx.candidates
        few = above.sum(-1) < self.n
        return torch.where(few[:, None], top_k_mask(conf, torch.full_like(ctx.step, self.n)), above)


class Backtrack:
    """Record this step's commit-time confidences, then remask the ``r`` decided positions of the block whose
    top-1 probability fell most since the previous step (a ``Modifier``; returns ``Decision.remask`` for earlier
    commits and drops the commits it takes back in the same step)."""

    def __init__(self, n: int, mu: int) -> None:
        self.n, self.mu = int(n), int(mu)

    def check_policy(self, policy: Policy) -> None:
        refuse_modifiers("saber", policy, REFUSED_PIECES, OWN_OPTIONS)

    def count(self, committed: Tensor) -> Tensor:
        """[B] remasks after ``committed`` [B] commits: ``min(max(floor(n/2), ceil(fix/mu)), fix - 1)``,
        ``fix = max(n, committed)``."""
        fix = committed.clamp(min=self.n)
        return torch.minimum(((fix + self.mu - 1) // self.mu).clamp(min=self.n // 2), fix - 1)

    def __call__(self, decision: Decision, proposal: Proposal, logits: Tensor, ctx: StepContext,
                 state: PolicyState) -> Decision:
        from dllm.kernels import top2_confidence

        st = state.values[KEY]
        b, w = ctx.tokens.shape
        cols = torch.arange(w, device=ctx.tokens.device) + ctx.window_start
        in_block = (cols >= ctx.block_start[:, None]) & (cols < ctx.block_end[:, None]) & ctx.active[:, None]
        conf = torch.where(ctx.candidates, proposal.confidence, float("-inf"))  # [B, W]
        decided = in_block & ~ctx.candidates
        if bool(decided.any()):
            conf[decided] = top2_confidence(logits[decided])[0].to(conf.dtype)
        g0 = ctx.window_start - ctx.gen_start
        recorded, previous = st["recorded"][:, g0:g0 + w], st["previous"][:, g0:g0 + w]  # views
        commit = decision.commit
        delta = conf - previous
        recorded[commit] = conf[commit]  # kept when the position is remasked (the reference's bookkeeping)
        previous[in_block] = conf[in_block]

        open_rows = (ctx.candidates & ~commit).any(-1)  # a block filled by this step is not backtracked
        r = torch.where(open_rows, self.count(commit.sum(-1)), torch.zeros_like(ctx.step))
        pool = in_block & (~ctx.candidates | commit)  # decided after this step's commits
        chosen = top_k_mask(torch.where(pool, -delta, float("-inf")), r)
        decision.commit = commit & ~chosen  # committed and taken back in the same step: never written
        decision.remask = chosen & ~commit
        return decision


@POLICIES.register(
    "saber", "Saber: commit above the mean confidence of earlier commits (the top n when fewer pass), then remask "
             "the commits whose confidence fell most since the last step (revocable)",
    options=[
        Option("n", 1, "fewest commits a step (the most confident when fewer pass the adaptive threshold); "
               "also sets the fewest remasks, floor(n / 2); the reference's default is 2", kind=int, low=1),
        Option("mu", 8, "a step that commits fix tokens remasks at least ceil(fix / mu) (at most fix - 1)",
               kind=int, low=1),
        TEMPERATURE,
    ])
def saber(n: int = 1, mu: int = 8, temperature: float = 0.0) -> Policy:
    return Policy("saber", ProbabilityScorer(temperature), AdaptiveThreshold(n), modifiers=[Backtrack(n, mu)],
                       options={"n": n, "mu": mu, "temperature": temperature})
