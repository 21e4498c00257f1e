"""Options every policy accepts (``register_common_options``), applied after the policy's own factory in this
order, each adding a ``Modifier``:

* ``early_commit=True`` (+ ``early_commit_thresholds``, ``answer_region``, ``early_commit_gap``,
  ``early_commit_scope``, ``early_commit_progress``): Prophet's all-in commit on top of any policy, with the same
  options and defaults as the ``earlycommit`` policy (``dllm/samplers/prophet.py``);
* ``eotp="reference"|"threshold"`` (+ ``eotp_threshold``): Learn2PD's end-of-text prediction.

Composition order inside one step (``Policy.decide``): logits processors (credit) -> scorer -> selector
(threshold / quota / filter) -> modifiers (early commit, then EoTP). The block schedule (``fixed`` or
``adaptive``) is independent: it sets each row's block from the raw logits of the block's first forward,
before the policy runs, and per-block state (credit) resets when a row opens a block.
"""

from __future__ import annotations

from typing import Any, Sequence

from dllm.errors import DllmError, check_choice
from dllm.registry import Option
from dllm.samplers.base import Policy
from dllm.samplers.eotp import MODES as EOTP_MODES
from dllm.samplers.eotp import EndOfTextPrediction
from dllm.samplers.prophet import (
    COMMIT_SCOPES,
    DEFAULT_THRESHOLDS,
    GAP_REDUCTIONS,
    PROGRESS_MODES,
    EarlyCommit,
    parse_region,
    parse_thresholds,
)
from dllm.samplers.registry import register_common_options

#: Prophet's three gap thresholds (early, mid, late generation)
EARLY_COMMIT_THRESHOLDS = Option(
    "early_commit_thresholds", DEFAULT_THRESHOLDS, "Prophet's logit-gap thresholds for progress < 0.33, < 0.67, rest",
    kind=None, parse=parse_thresholds, allowed="three numbers >= 0, e.g. 7.5,5,2.5")
#: which generated positions early commit monitors
ANSWER_REGION = Option(
    "answer_region", "0:5", "monitored generation offsets start:end, decided or not (the reference's 5 answer "
    "positions); all = every undecided generated position (the old default)",
    kind=None, parse=parse_region, allowed="all or start:end (end exclusive, may be empty)")
#: how the monitored positions' gaps are reduced to one number
EARLY_COMMIT_GAP = Option(
    "early_commit_gap", "min", "reduce the monitored gaps with min (every monitored position confident; default) or "
    "mean (the reference: decided positions' large gaps can outvote an uncertain one)", kind=str,
    choices=GAP_REDUCTIONS)
#: what the all-in commits
EARLY_COMMIT_SCOPE = Option(
    "early_commit_scope", "all", "all-in commits every undecided generated position (all, reference) or only the "
    "answer_region (region, the old behaviour)", kind=str, choices=COMMIT_SCOPES)
#: how decoding progress is counted for the thresholds
EARLY_COMMIT_PROGRESS = Option(
    "early_commit_progress", "step", "progress = forwards so far / step budget (step, reference g/S) or share of "
    "the generation decided before the step (decided, the old count)", kind=str, choices=PROGRESS_MODES)
#: every option of the early commit, in the order the factories take them
EARLY_COMMIT_OPTIONS = (EARLY_COMMIT_THRESHOLDS, ANSWER_REGION, EARLY_COMMIT_GAP, EARLY_COMMIT_SCOPE,
                        EARLY_COMMIT_PROGRESS)


def early_commit_modifier(early_commit_thresholds: Any = None, answer_region: Any = None,
                          early_commit_gap: Any = None, early_commit_scope: Any = None,
                          early_commit_progress: Any = None) -> tuple[EarlyCommit, dict[str, Any]]:
    """The ``EarlyCommit`` for these option values (``None`` = the declared default) and the checked values,
    for ``Policy.options``. Used by the ``earlycommit`` policy and the ``early_commit`` option group alike."""
    given = dict(early_commit_thresholds=early_commit_thresholds, answer_region=answer_region,
                 early_commit_gap=early_commit_gap, early_commit_scope=early_commit_scope,
                 early_commit_progress=early_commit_progress)
    opts = {o.name: o.check(given[o.name]) for o in EARLY_COMMIT_OPTIONS}
    modifier = EarlyCommit(opts["early_commit_thresholds"], opts["answer_region"], opts["early_commit_gap"],
                           opts["early_commit_scope"], opts["early_commit_progress"])
    return modifier, opts


def refuse_modifiers(name: str, policy: Policy, refused: Sequence[tuple[type, str, str]],
                     own_options: Sequence[str]) -> None:
    """For a piece's ``check_policy``: one error line for the first ``(piece type, option, why)`` of ``refused``
    that has a modifier in ``policy`` (policy ``name`` runs with ``own_options`` only)."""
    for piece, option, why in refused:
        if any(isinstance(m, piece) for m in policy.modifiers):
            raise DllmError(f"{name} cannot be combined with {option}: {why}; {name} runs with its own options only "
                            f"({', '.join(own_options)})")


def _parse_eotp(value: Any) -> str | None:
    if value in (None, False) or (isinstance(value, str) and value.strip().lower() in ("off", "none", "false")):
        return None
    check_choice("eotp mode", value, EOTP_MODES)
    return value


@register_common_options("Prophet early commit on top of any policy", [
    Option("early_commit", False, "commit every remaining position once the answer's logit gap is large",
           kind=bool),
    *EARLY_COMMIT_OPTIONS,
])
def apply_early_commit(policy: Policy, early_commit: bool = False, **options: Any) -> Policy:
    has = any(isinstance(m, EarlyCommit) for m in policy.modifiers)
    given = {k: v for k, v in options.items() if v is not None}
    if has:
        if not early_commit:
            raise DllmError(f"policy {policy.name!r} always commits early; use its base policy instead of early_commit=False")
        return policy
    if not early_commit:
        if given:
            raise DllmError(f"{sorted(given)[0]} needs early_commit=True")
        return policy
    modifier, opts = early_commit_modifier(**given)
    return policy.add_modifier(modifier, "answer", early_commit=True, **opts)


@register_common_options("Learn2PD end-of-text prediction on top of any policy", [
    Option("eotp", None, "end-of-text prediction: reference (after the filter/most confident commit) or threshold",
           kind=None, nullable=True, parse=_parse_eotp, allowed="off|" + "|".join(EOTP_MODES)),
    Option("eotp_threshold", 0.9, "EOS probability that ends the answer (eotp=threshold)", kind=float, low=0,
           low_open=True, high=1),
])
def apply_eotp(policy: Policy, eotp: Any = None, eotp_threshold: Any = None) -> Policy:
    if eotp is None:
        if eotp_threshold is not None:
            raise DllmError("eotp_threshold needs eotp='threshold'")
        return policy
    if eotp_threshold is not None and eotp != "threshold":
        raise DllmError(f"eotp_threshold applies to eotp='threshold' only, not {eotp!r}")
    tau = 0.9 if eotp_threshold is None else eotp_threshold
    opts: dict[str, Any] = {"eotp": eotp}
    if eotp == "threshold":
        opts["eotp_threshold"] = tau
    return policy.add_modifier(EndOfTextPrediction(eotp, tau), "answer", **opts)
