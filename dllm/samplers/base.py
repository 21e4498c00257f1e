"""The policy contract: one decision per denoising step over batched tensors, with explicit per-row state.

The engine hands a policy a ``StepContext`` (logits for a window of canvas positions, which of them are
eligible, where each row's block is, how far each row is) and gets back a ``Decision`` (which positions to
commit, with which tokens). The engine, the cache and the model never know which policy runs.

A policy is composed of small pieces, in the spirit of Hugging Face's ``LogitsProcessor``:

* ``LogitsProcessor`` - rewrites logits before scoring (e.g. CreditDecoding's trace credits);
* ``Scorer``        - proposes a token and a confidence per eligible position (prob, margin, entropy, random);
* ``Selector``      - turns confidences into a commit mask (fixed quota, threshold, factor, Dream schedule);
* ``Modifier``      - edits the decision afterwards (early commit, end-of-text prediction, WINO's remasking).

A decision commits positions and, for a revocable policy, may also remask positions it committed earlier
(``Decision.remask``); every other policy leaves ``remask`` at ``None`` and its decisions are final.

State that must survive between steps lives in a ``PolicyState`` (tensors indexed by row), created per
``generate`` call, so nothing leaks across prompts or between rows of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from dllm.models.base import SpecialTokens


@dataclass
class StepContext:
    """Everything a policy may look at for one step. Shapes: B rows, W window positions, V vocabulary."""

    logits: Tensor  #: [B, W, V] predictions aligned to canvas positions ``window_start + j`` (shift applied)
    tokens: Tensor  #: [B, W] current canvas tokens in the window (``mask_id`` where undecided)
    candidates: Tensor  #: [B, W] bool: undecided positions inside each row's current block
    undecided: Tensor  #: [B, W] bool: undecided positions anywhere in the window (answer region)
    window_start: int  #: absolute canvas index of window column 0
    gen_start: int  #: absolute canvas index of the first generated position
    gen_length: int
    block_start: Tensor  #: [B] absolute start of each row's current block
    block_end: Tensor  #: [B] absolute end (exclusive)
    step: Tensor  #: [B] 0-based step index within the current block
    block_steps: Tensor  #: [B] step budget S_b of the current block (quota schedules)
    block_mask_count: Tensor  #: [B] undecided positions in the block when it opened
    decoded: Tensor  #: [B] generated positions already decided (before this step)
    active: Tensor  #: [B] bool: rows still generating; other rows must not commit
    generators: list[torch.Generator]  #: one RNG per row, so a row's samples do not depend on its batch
    special: SpecialTokens
    temperature: float = 0.0

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def progress(self) -> Tensor:
        """[B] fraction of the generation already decided."""
        return self.decoded.float() / float(self.gen_length)


@dataclass
class Proposal:
    """A scorer's output: the token each position would take and how sure the policy is of it."""

    tokens: Tensor  #: [B, W] long
    confidence: Tensor  #: [B, W] float32, -inf where not a candidate


@dataclass
class Decision:
    commit: Tensor  #: [B, W] bool
    tokens: Tensor  #: [B, W] long (read where ``commit``)
    confidence: Tensor | None = None  #: [B, W] for traces
    finish: Tensor | None = None  #: [B] bool: row is complete, fill its remaining positions with EOS
    #: [B, W] bool, revocable policies (WINO, Saber): positions to set back to the mask token after this step's commits.
    #: The engine keeps only positions of the row's current block decided before this step, and drops a row's
    #: remasks for the step when they would leave fewer of its block's positions decided than the row has taken
    #: steps in the block (the loop guard, docs/design.md#remasking)
    remask: Tensor | None = None


@dataclass
class PolicyState:
    """Per-generate-call, per-row state. Pieces keep their tensors under their own key."""

    batch_size: int
    device: torch.device
    values: dict[str, Any] = field(default_factory=dict)


class LogitsProcessor(Protocol):
    def __call__(self, logits: Tensor, ctx: StepContext, state: PolicyState) -> Tensor: ...


class Scorer(Protocol):
    def __call__(self, logits: Tensor, ctx: StepContext) -> Proposal: ...


class Selector(Protocol):
    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor: ...


class Modifier(Protocol):
    def __call__(self, decision: Decision, proposal: Proposal, logits: Tensor, ctx: StepContext,
                 state: PolicyState) -> Decision: ...


class Policy:
    """A composed unmasking policy. ``window`` says how much of the canvas the policy reads logits for:
    ``"block"`` (the current block) or ``"answer"`` (every undecided generated position, e.g. early commit)."""

    def __init__(self, name: str, scorer: Scorer, selector: Selector,
                 processors: list[LogitsProcessor] | None = None, modifiers: list[Modifier] | None = None,
                 window: str = "block", options: dict[str, Any] | None = None) -> None:
        self.name = name
        self.scorer = scorer
        self.selector = selector
        self.processors = list(processors or [])
        self.modifiers = list(modifiers or [])
        self.window = window
        self.options = dict(options or {})

    def add_modifier(self, modifier: Modifier, window: str | None = None, **options: Any) -> "Policy":
        """Append ``modifier`` (run after the existing ones); ``window="answer"`` when it reads logits beyond the
        block (early commit, EoTP); ``options`` are recorded in ``self.options``. Returns the policy."""
        self.modifiers.append(modifier)
        if window is not None:
            self.window = window
        self.options.update(options)
        return self

    def pieces(self) -> list[Any]:
        return [*self.processors, self.scorer, self.selector, *self.modifiers]

    def init_state(self, batch_size: int, device: torch.device) -> PolicyState:
        """A fresh state for one ``generate`` call. A piece may first refuse the policy it sits in
        (``check_policy(policy)``, a one-line ``DllmError``: e.g. a revocable rule beside a modifier it would
        undo); the policy still builds, the call does not start."""
        for piece in self.pieces():
            if hasattr(piece, "check_policy"):
                piece.check_policy(self)
        state = PolicyState(batch_size, device)
        for piece in self.pieces():
            if hasattr(piece, "init_state"):
                piece.init_state(state)
        return state

    def on_block_start(self, state: PolicyState, rows: Tensor) -> None:
        """``rows`` [B] bool: rows that just opened a new block (per-block state resets here)."""
        for piece in self.pieces():
            if hasattr(piece, "on_block_start"):
                piece.on_block_start(state, rows)

    def on_remask(self, state: PolicyState, remask: Tensor) -> None:
        """``remask`` [B, W] bool: the positions the engine set back to the mask this step, after its filters
        (``Decision.remask`` may ask for more). Called only for a decision with ``remask`` set."""
        for piece in self.pieces():
            if hasattr(piece, "on_remask"):
                piece.on_remask(state, remask)

    def decide(self, ctx: StepContext, state: PolicyState) -> Decision:
        logits = ctx.logits
        for processor in self.processors:
            logits = processor(logits, ctx, state)
        proposal = self.scorer(logits, ctx)
        commit = self.selector(proposal, ctx, state) & ctx.candidates & ctx.active[:, None]
        decision = Decision(commit=commit, tokens=proposal.tokens, confidence=proposal.confidence)
        for modifier in self.modifiers:
            decision = modifier(decision, proposal, logits, ctx, state)
        decision.commit &= ctx.undecided & ctx.active[:, None]
        return decision

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Policy({self.name!r}{', ' if opts else ''}{opts})"
