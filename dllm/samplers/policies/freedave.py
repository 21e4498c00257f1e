"""``freedave`` (FreeDave, docs/methods.md#freedave): the tokens of a static rule, bit for bit, in fewer forwards:
``lowconf`` by default, ``threshold`` with ``base=threshold`` (the reference's FreeDave++).

Static decoding forwards a canvas, commits what its rule picks (``lowconf``: the step's quota of most confident
candidates; ``threshold``: every candidate with confidence >= ``threshold``, at least the most confident one) and
forwards the result; the next state is known only after the forward. FreeDave guesses the next few states from
the logits it already has and lets the model check the guesses in the same step:

* **Drafts.** The last forwarded state ``s`` and its proposal (argmax token and top-1 probability per candidate)
  are kept as the *seed*. The canvas ``c`` of this step is ``s`` plus its static commit. Draft ``j`` (``j = 1 ..
  draft_steps - 1``) is ``c`` plus the commits of the next ``j`` static steps taken from the seed's ranking
  (``c``'s candidates by the seed's confidence, tokens from the seed): the states static decoding would reach if
  the logits did not change. ``lowconf``: each drafted step adds its quota. ``threshold``: each adds one token,
  the most confident left (ties to the lower position, as the rule's "at least one" pick), because every
  candidate left in ``c`` is below the threshold (the seed's candidates at or above it are in ``c`` already), so
  under frozen logits each further threshold step commits exactly its forced pick; draft ``j`` is the state
  after ``j + 1`` threshold steps predicted from the seed. A draft that would fill the block is not made (its
  logits would only open the next block, which the engine does from its own forward).
* **One step.** The canvas and its drafts go through the model together: the canvas in the engine's forward,
  the drafts as extra batch rows (a second call of the same cache kind, ``cache_stats["draft_calls"]``). The
  drafts are built from the seed alone, before the step's logits exist, so the rows are independent and the
  step counts as one forward.
* **Verification.** The chain starts at ``d = c``. ``T`` is the static commit of ``d`` computed from ``d``'s own
  logits by the policy's scorer and selector (at the static step, for the quota). The chain hops to the draft
  that decides exactly ``T`` beyond ``d`` with ``T``'s tokens (``FreeDave.verified``): that draft *is* the static
  state after ``d``, and its logits are the static logits. Drafts are searched furthest first, as the reference
  does; they are nested and each drafted step adds at least one position, so at most one draft qualifies. A hop
  is one static step, whatever the number of drafts it passes over (a threshold step of three tokens is matched
  by draft ``j + 3``, not ``j + 1``); for ``lowconf`` it is always the next draft. With ``m`` hops the step
  commits what the last state ``d_m`` decided beyond ``c`` plus ``T_m``, i.e. ``m + 1`` static steps, and
  ``d_m``'s proposal becomes the seed. Nothing is ever committed that static decoding would not commit at that
  point, so the output is the base rule's (same ``steps``, blocks, schedule and cache), with at most
  ``draft_steps`` static steps per forward.

``draft_steps = 1`` is the base rule itself. A row's first step in a block has no seed (the seed's block is full),
so it is an ordinary step; with the last candidate of a block committed from a draft's logits, a ``lowconf``
block costs ``1 + ceil((n - 1) / draft_steps)`` forwards at best for ``n`` one-token steps.

NFE and cost: ``seq_nfe`` counts the steps (sequential forwards), as for every policy. ``cache_stats`` adds
``draft_rows`` (per prompt: draft rows run through the model), ``rows_forwarded`` (``nfe + draft_rows``, the
total rows), ``draft_accepted`` (static steps taken from verified drafts), ``draft_calls`` (model calls of the
drafts; ``GenerationOutput.nfe`` counts the engine's calls only) and ``static_commit_step`` (per prompt and
generated position: the static step of the base rule at which it was committed, -1 if never; the base policy's
``trace.commit_step()``). The compute per step is up to ``draft_steps`` rows instead of one.

Caches. Verification compares the drafts with the *cached* static decode, so a draft's logits must be what the
cache would give that state at that step. ``none`` is stateless; ``prefix`` and ``dual`` with ``refresh=block``
serve a cached step from the store of the block's first (full) forward plus the recomputed fresh set, which
depends only on the state's tokens. The draft rows keep their own stores, filled by forwarding the canvas with
the engine's block-opening full forward (``draft_steps - 1`` extra rows at every block open). With
``refresh=1`` every forward is a full one, so any cache works. Refused, with one error line: ``delayed`` (its
stored K/V of a token depend on the forward right after it was committed, a forward of another draft) and
``refresh=N > 1`` (the static refresh falls on static steps, which drafts skip over).

Paper: *Free Draft-and-Verification: Toward Lossless Parallel Decoding for Diffusion Large Language Models*,
Wu and Zhang, 2025 (arXiv 2510.00294). Authors' code: ``cychomatica/FreeDave`` (``generation/core.py``;
``draft_steps`` 4, one token per step, greedy; FreeDave++: threshold 0.95 with the subset rule).

**Quirks.**

* Greedy only (``temperature = 0``): a sampled draft cannot be verified token for token against a sample the
  static decode would draw later from its own random stream.
* The quota follows ``steps`` (LLaDA's per-block schedule), so ``freedave`` reproduces ``lowconf`` at any step
  budget; the reference decodes one token per step only.
* Verification needs the draft to *be* the target state. The reference's check (FreeDave++ and its vectorised
  one-token path) hops to the furthest draft that is only a *subset* of the target state (every token the draft
  decided is the target's). With one-token-per-step ``lowconf`` drafts both rules accept the same chain. With
  threshold drafts a strict subset is a state the threshold rule never visits (its step commits all of ``T`` at
  once), so the reference's FreeDave++ can decode other tokens than threshold decoding: here the chain stops
  there and commits ``T`` instead, which is lossless (``tests/test_lossless.py`` shows both rules on a scripted
  model, and the subset rule changing the static steps of one synthetic prompt on the tiny model). The
  reference's rule is ``verify=subset`` (with ``base=threshold``).
* ``threshold`` defaults to the reference's FreeDave++ value 0.95; the ``threshold`` policy's default is 0.9, so
  pass the same value to both to compare them. ``threshold`` with ``base=lowconf`` is an error (one line).
* With ``stop_at_eos`` the static decode stops at the state where an end token is decided with everything before
  it decided and fills the undecided rest with EOS. A forward whose chain passes through that state also commits
  the later static steps, all after the end token; the engine overwrites them with EOS, so tokens and
  ``seq_nfe`` are the static decode's, but the trace and ``static_commit_step`` show commits at positions the
  static decode never committed. The policy does not see ``stop_at_eos``, and cutting the chain at such states
  would cost forwards without it.
* The reference runs its first forward of a block without committing and starts drafting from it; here that
  forward commits its static step and drafting starts from the second step. Same forwards per block.
* The reference's ``early_exit`` (fill with EOS once a whole block is EOS) is ``stop_at_eos`` here.
* ``early_commit`` and ``eotp`` build (every policy takes them) but ``generate`` refuses them with one error
  line: they would change the static rule the drafts are verified against. With continuous batching the engine
  decodes ``freedave`` in static batches (same tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from dllm.cache.base import ManagerWrapper
from dllm.cache.managers import KVStoreCache
from dllm.errors import DllmError
from dllm.registry import Option
from dllm.samplers.base import Decision, Policy, PolicyState, Proposal, StepContext
from dllm.samplers.registry import POLICIES
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import QuotaSelector, ThresholdSelector, llada_quota, top_k_mask

KEY = "freedave"
NEG_INF = float("-inf")
#: the static rules the drafts can reproduce
BASES = ("lowconf", "threshold")
#: how a threshold draft is matched with the static next state: the whole state (lossless) or the reference's subset
VERIFY_MODES = ("exact", "subset")
#: the reference's FreeDave++ threshold (``eval/scripts/eval_llada.sh``)
DEFAULT_THRESHOLD = 0.95


def _greedy(value: Any) -> float:
    """Only temperature 0 (as a number or numeric text)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DllmError(f"temperature must be a number, got {value!r}") from None
    if v != 0:
        raise DllmError(f"freedave decodes greedily (temperature 0): sampled drafts cannot be verified token for "
                        f"token; got temperature {value!r}")
    return 0.0


def check_lossless_cache(cache: Any) -> None:
    """One error line unless ``cache`` serves a state's logits from its tokens alone (see the module docstring)."""
    name = getattr(cache, "name", type(cache).__name__)
    refresh = getattr(cache, "refresh", None)
    if name == "none" or refresh == 1 or (name in ("prefix", "dual") and refresh == "block"):
        return
    raise DllmError(f"freedave is lossless with cache none, prefix or dual (refresh=block or 1), or any cache with "
                    f"refresh=1; got cache {name!r} with refresh={refresh}")


class StaticStep:
    """A selector run at the row's *static* step: the engine's step in the block plus the static steps that
    verified drafts already took (``PolicyState`` key ``freedave``, ``ahead`` [B])."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        return self.inner(proposal, replace(ctx, step=ctx.step + state.values[KEY]["ahead"]), state)


@dataclass
class Drafts:
    """The draft rows of one step, N of them, in window coordinates."""

    parent: Tensor  #: [N] row of the batch each draft belongs to
    index: Tensor  #: [N] draft number j >= 1 (drafted steps ahead of the canvas)
    tokens: Tensor  #: [N, W] the draft's tokens
    added: Tensor  #: [N, W] bool: positions the draft decided that the canvas has not
    candidates: Tensor  #: [N, W] bool: the draft's undecided positions in the block
    logits: Tensor  #: [N, W, V]


class Drafter(ManagerWrapper):
    """The cache manager FreeDave's engine sees: the engine's own manager for the canvas plus a second manager of
    the same kind, ``draft_steps - 1`` rows per batch row, for the drafts. ``calls``, ``nfe`` and the forward
    counters are the engine manager's; ``stats`` adds the draft counters."""

    def __init__(self, inner: Any, cache_factory: Any, extra: int, single: bool = False) -> None:
        super().__init__(inner)
        self.extra = extra
        self.single = single  #: each drafted step adds one token (base=threshold), not the step's quota
        b, length = inner.key_mask.shape
        device = inner.key_mask.device
        self.drafts = cache_factory(inner.key_mask.repeat_interleave(extra, 0),
                                    inner.positions.repeat_interleave(extra, 0), inner.gen_start,
                                    inner.gen_end) if extra else None
        #: a KV manager that keeps its store across a block: draft rows take the block-opening forward too
        self.sync = isinstance(inner, KVStoreCache) and inner.refresh != 1
        self.mask_id = inner.model.mask_id
        self.cols = torch.arange(length, device=device)
        # the seed: the last forwarded state's proposal, per row, in canvas coordinates
        self.seeded = torch.zeros(b, dtype=torch.bool, device=device)
        self.seed_block = torch.full((b,), -1, dtype=torch.long, device=device)
        self.seed_conf = torch.full((b, length), NEG_INF, device=device)
        self.seed_tokens = torch.zeros((b, length), dtype=torch.long, device=device)
        self.next_candidates = torch.zeros((b, length), dtype=torch.bool, device=device)
        self.static_step = torch.zeros(b, dtype=torch.long, device=device)  #: static step of the next canvas
        self.mask_count = torch.zeros(b, dtype=torch.long, device=device)
        self.block_steps = torch.ones(b, dtype=torch.long, device=device)
        self.pending: Drafts | None = None
        self.draft_calls = 0
        self.draft_rows = torch.zeros(b, dtype=torch.long)
        self.accepted = torch.zeros(b, dtype=torch.long)
        #: static steps each row has taken, and the static step at which each position was committed (-1: never)
        self.static_done = torch.zeros(b, dtype=torch.long, device=device)
        self.static_map = torch.full((b, length), -1, dtype=torch.long, device=device)

    # --- what the engine reads of a cache manager ------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        out = dict(self.inner.stats())
        nfe = self.inner.nfe.tolist()
        rows = self.draft_rows.tolist()
        out.update(draft_calls=self.draft_calls, draft_rows=rows, rows_forwarded=[a + r for a, r in zip(nfe, rows)],
                   draft_accepted=self.accepted.tolist(),
                   static_commit_step=self.static_map[:, self.inner.gen_start:self.inner.gen_end].tolist())
        if "forwarded" in out:
            fwd = self.drafts.stats()["forwarded"] if self.drafts is not None else []
            out["draft_forwarded"] = torch.tensor(fwd, dtype=torch.long).view(len(nfe), self.extra).sum(1).tolist()
        return out

    def logits(self, canvas: Tensor, active: Tensor, block_start: Tensor, block_end: Tensor,
               window: tuple[int, int]) -> Tensor:
        # The drafts come from the seed alone, before this step's logits exist: they are this step's extra rows.
        self.pending = self._forward_drafts(canvas, active, block_start, block_end, window)
        return self.inner.logits(canvas, active, block_start, block_end, window)

    # --- drafts ----------------------------------------------------------------------------------------
    def _forward_drafts(self, canvas: Tensor, active: Tensor, block_start: Tensor, block_end: Tensor,
                        window: tuple[int, int]) -> Drafts | None:
        d = self.extra
        if not d:
            return None
        in_block = (self.cols >= block_start[:, None]) & (self.cols < block_end[:, None])
        undecided = (canvas == self.mask_id) & in_block
        # the seed still describes this canvas: same block, and its undecided set is the canvas's
        ok = active & self.seeded & (self.seed_block == block_start) & (undecided == self.next_candidates).all(-1)
        sync = active & ~ok if self.sync else torch.zeros_like(ok)
        if not bool(ok.any()) and not bool(sync.any()):
            return None
        dcanvas = canvas.repeat_interleave(d, 0)
        dactive = sync.repeat_interleave(d, 0)
        conf = torch.where(self.next_candidates, self.seed_conf, NEG_INF)
        cand = self.next_candidates & ok[:, None]
        added = torch.zeros_like(cand)
        live = ok.clone()
        made: list[tuple[int, Tensor, Tensor, Tensor]] = []  #: (j, rows, added, candidates) per drafted step
        for j in range(1, d + 1):
            quota = (torch.ones_like(self.mask_count) if self.single
                     else llada_quota(self.mask_count, self.block_steps, self.static_step + (j - 1)))
            pick = top_k_mask(torch.where(cand, conf, NEG_INF), quota) & cand
            live = live & pick.any(-1) & (cand & ~pick).any(-1)  # a draft adds a step and leaves the block open
            if not bool(live.any()):
                break
            cand = cand & ~pick
            added = added | pick
            rows = live.nonzero().squeeze(1)
            slots = rows * d + (j - 1)
            dcanvas[slots] = torch.where(added[rows], self.seed_tokens[rows], canvas[rows])
            dactive[slots] = True
            made.append((j, rows, added[rows], cand[rows]))
        if not bool(dactive.any()):
            return None
        logits = self.drafts.logits(dcanvas, dactive, block_start.repeat_interleave(d, 0),
                                    block_end.repeat_interleave(d, 0), window)
        self.draft_calls += 1
        self.draft_rows += dactive.view(-1, d).sum(1).cpu()
        if not made:
            return None  # block-opening forwards only
        ws, we = window
        parent = torch.cat([rows for _, rows, _, _ in made])
        index = torch.cat([torch.full_like(rows, j) for j, rows, _, _ in made])
        slots = parent * d + index - 1
        return Drafts(parent=parent, index=index, tokens=dcanvas[slots, ws:we],
                      added=torch.cat([a for _, _, a, _ in made])[:, ws:we],
                      candidates=torch.cat([c for _, _, _, c in made])[:, ws:we], logits=logits[slots])

    def reseed(self, ctx: StepContext, conf: Tensor, tokens: Tensor, candidates: Tensor, ahead: Tensor,
               taken: Tensor) -> None:
        """Keep this step's last verified state's proposal (window coordinates) as the next step's seed."""
        ws, w = ctx.window_start, ctx.tokens.shape[1]
        self.seed_conf.fill_(NEG_INF)
        self.seed_conf[:, ws:ws + w] = conf.float()
        self.seed_tokens[:, ws:ws + w] = tokens
        self.next_candidates.zero_()
        self.next_candidates[:, ws:ws + w] = candidates & ctx.active[:, None]
        self.seeded = ctx.active & self.next_candidates.any(-1)
        self.seed_block = ctx.block_start.clone()
        self.static_step = ctx.step + ahead + 1
        self.mask_count = ctx.block_mask_count.clone()
        self.block_steps = ctx.block_steps.clone()
        self.accepted += taken.cpu()
        self.pending = None

    def record(self, ctx: StepContext, commit: Tensor, offset: Tensor, taken: Tensor) -> None:
        """Note the static step of this step's commits (``offset`` [B, W]: static steps after the row's first of
        this step) and count the ``taken + 1`` static steps of every active row."""
        ws, w = ctx.window_start, commit.shape[1]
        here = self.static_map[:, ws:ws + w]
        here.copy_(torch.where(commit, self.static_done[:, None] + offset, here))
        self.static_done += (taken + 1) * ctx.active.long()


class FreeDave:
    """The draft-and-verify piece (a ``Modifier``): wraps the engine's cache manager (``wrap_cache``, the engine
    calls it once per ``generate`` call) and, each step, replaces the static decision by the longest verified
    chain of drafts plus the static commit of its last state."""

    def __init__(self, draft_steps: int, selector: Any, base: str = "lowconf", verify: str = "exact") -> None:
        self.extra = int(draft_steps) - 1
        self.verify = verify  #: "exact" (the draft is the static next state) or "subset" (the reference's FreeDave++)
        self.selector = selector  #: the static rule (quota or threshold selector), called with explicit static steps
        self.base = base  #: the policy the output reproduces: lowconf (quota drafts) or threshold (one token each)

    def init_state(self, state: PolicyState) -> None:
        state.values[KEY] = {"ahead": torch.zeros(state.batch_size, dtype=torch.long, device=state.device)}

    def on_block_start(self, state: PolicyState, rows: Tensor) -> None:
        st = state.values[KEY]
        st["ahead"] = torch.where(rows, torch.zeros_like(st["ahead"]), st["ahead"])

    def check_policy(self, policy: Policy) -> None:
        if policy.processors or any(m is not self for m in policy.modifiers):
            added = [k for k in policy.options
                     if k not in ("draft_steps", "base", "threshold", "verify", "temperature")]
            raise DllmError(f"freedave cannot be combined with {added[0] if added else 'other pieces'}: its drafts "
                            f"are verified against {self.base}'s static rule, which that option changes")

    def wrap_cache(self, cache: Any, cache_factory: Any, state: PolicyState, policy: Policy) -> Any:
        check_lossless_cache(cache)
        drafter = Drafter(cache, cache_factory, self.extra, single=self.base == "threshold")
        state.values[KEY].update(drafter=drafter, scorer=policy.scorer)
        return drafter

    def verified(self, pick: Tensor, draft_tokens: Tensor, commit: Tensor, tokens: Tensor) -> bool:
        """Whether a draft *is* the static state after the chain's current state ``d``: what the draft decided
        beyond ``d`` (``pick`` [W] with ``draft_tokens`` [W]) is the static commit of ``d`` (``commit`` [W] with
        ``tokens`` [W]), the same positions with the same tokens. With ``verify="subset"`` (the reference's
        FreeDave++) a ``pick`` that is only a subset of ``commit``, with the same tokens there, passes too; see
        the module docstring."""
        same_tokens = torch.equal(draft_tokens[pick], tokens[pick])
        if self.verify == "subset":
            return same_tokens and not bool((pick & ~commit).any())
        return same_tokens and torch.equal(pick, commit)

    def __call__(self, decision: Decision, proposal: Proposal, logits: Tensor, ctx: StepContext,
                 state: PolicyState) -> Decision:
        st = state.values[KEY]
        drafter: Drafter | None = st.get("drafter")
        if drafter is None:
            return decision
        commit, tokens = decision.commit.clone(), decision.tokens.clone()
        confidence = proposal.confidence.clone()
        seed_tokens = proposal.tokens.clone()
        next_candidates = ctx.candidates & ~decision.commit
        taken = torch.zeros_like(st["ahead"])
        #: static steps after the row's first of this step at which each commit is taken (-1 where none)
        offset = torch.where(decision.commit, 0, -1).long()
        pending, drafter.pending = drafter.pending, None
        if pending is not None:
            p = pending.parent
            n = p.numel()
            dctx = replace(
                ctx, logits=pending.logits, tokens=pending.tokens, candidates=pending.candidates,
                undecided=ctx.undecided[p] & ~pending.added, block_start=ctx.block_start[p],
                block_end=ctx.block_end[p], step=ctx.step[p] + st["ahead"][p] + pending.index,
                block_steps=ctx.block_steps[p], block_mask_count=ctx.block_mask_count[p],
                decoded=ctx.decoded[p] + pending.added.sum(-1), active=torch.ones(n, dtype=torch.bool, device=p.device),
                generators=[ctx.generators[i] for i in p.tolist()])
            target = st["scorer"](pending.logits, dctx)  # T_j: the static commit of each draft state
            target_commit = self.selector(target, dctx, state) & dctx.candidates
            drafts_of: dict[int, dict[int, int]] = {}  # row -> draft number -> draft slot
            for x, (i, j) in enumerate(zip(p.tolist(), pending.index.tolist())):
                drafts_of.setdefault(i, {})[j] = x
            for row, slots in sorted(drafts_of.items()):
                # the chain: from d_0 (the canvas) hop to the draft that is the static next state, as long as one is
                best, x, hops = 0, -1, 0
                t_commit, t_tokens = decision.commit[row], decision.tokens[row]
                before = torch.zeros_like(t_commit)  # what the chain's current state added to the canvas
                while True:
                    # the reference's search order: the furthest draft first (with the exact match at most one
                    # draft qualifies: the drafts are nested and each drafted step adds at least one position)
                    nxt = next((j for j in sorted(slots, reverse=True) if j > best and self.verified(
                        pending.added[slots[j]] & ~before, pending.tokens[slots[j]], t_commit, t_tokens)), None)
                    if nxt is None:
                        break
                    x = slots[nxt]
                    offset[row] = torch.where(pending.added[x] & ~before, hops, offset[row])
                    best, hops, before = nxt, hops + 1, pending.added[x]
                    t_commit, t_tokens = target_commit[x], target.tokens[x]
                if hops:
                    offset[row] = torch.where(t_commit, hops, offset[row])
                    commit[row] = pending.added[x] | t_commit
                    tokens[row] = torch.where(pending.added[x], pending.tokens[x], t_tokens)
                    confidence[row] = target.confidence[x]
                    seed_tokens[row] = t_tokens
                    next_candidates[row] = pending.candidates[x] & ~t_commit
                    taken[row] = hops
        st["ahead"] = st["ahead"] + taken
        drafter.record(ctx, commit, offset, taken)
        drafter.reseed(ctx, confidence, seed_tokens, next_candidates, st["ahead"], taken)
        return Decision(commit=commit, tokens=tokens, confidence=confidence, finish=decision.finish)


def _threshold_of_base(base: str, threshold: float | None) -> float | None:
    """The threshold ``base`` decodes with (None for lowconf); one error line for a threshold without it."""
    if base == "lowconf":
        if threshold is not None:
            raise DllmError(f"threshold applies to base='threshold' only (base 'lowconf' uses the step quota); "
                            f"got threshold={threshold:g}")
        return None
    return DEFAULT_THRESHOLD if threshold is None else threshold


@POLICIES.register(
    "freedave", "FreeDave: lowconf's (or, base=threshold, threshold's) exact tokens in fewer forwards (drafts of "
                "the next static steps, verified in the same forward)",
    options=[
        Option("draft_steps", 4, "candidate states per forward: the canvas and draft_steps-1 drafts of the next "
               "static steps (1 = the base rule itself)", kind=int, low=1),
        Option("base", "lowconf", "the static rule reproduced: lowconf (step quota) or threshold (FreeDave++: "
               "drafts of threshold steps)", kind=str, choices=BASES),
        Option("threshold", None, f"confidence threshold of base=threshold (default {DEFAULT_THRESHOLD:g}, the "
               "reference's FreeDave++)", kind=float, low=0, low_open=True, high=1, nullable=True),
        Option("verify", "exact", "base=threshold: a draft passes when it is the threshold rule's next state "
               "(exact: threshold's output, lossless) or only a subset of it (subset: the reference's FreeDave++, "
               "which can leave threshold's output)", kind=str, choices=VERIFY_MODES),
        Option("temperature", 0.0, "sampling temperature: 0 only (greedy; drafts are verified token for token)",
               kind=None, parse=_greedy, allowed="0"),
    ])
def freedave(draft_steps: int = 4, base: str = "lowconf", threshold: float | None = None, verify: str = "exact",
             temperature: float = 0.0) -> Policy:
    tau = _threshold_of_base(base, threshold)
    if tau is None and verify != "exact":
        raise DllmError(f"verify={verify!r} applies to base='threshold' only (lowconf drafts are matched exactly)")
    if tau is None:
        quota = QuotaSelector()
        return Policy("freedave", ProbabilityScorer(0.0), StaticStep(quota), modifiers=[FreeDave(draft_steps, quota)],
                      options={"draft_steps": draft_steps, "temperature": 0.0})
    rule = ThresholdSelector(tau)  # the threshold policy's rule (float32 confidences, >= tau, at least one)
    return Policy("freedave", ProbabilityScorer(0.0), StaticStep(rule),
                  modifiers=[FreeDave(draft_steps, rule, base="threshold", verify=verify)],
                  options={"draft_steps": draft_steps, "base": base, "threshold": tau, "verify": verify,
                           "temperature": 0.0})
