"""Research policies as composable plug-ins of the engine (issue 4).

Named policies:

* ``creditdecoding`` - CreditDecoding trace credits (a ``LogitsProcessor``) + the Fast-dLLM threshold rule.
* ``earlycommit``    - Prophet: a base rule (``lowconf`` quota, as the reference, or ``threshold``) + the
  early-commit modifier.
* ``learnedfilter``  - Learn2PD: a trained MLP filter accepts positions, plus the most confident one(s).

Options every policy accepts (``dllm.samplers.registry.register_common_options``; applied after the
policy's own factory, in this order, each adding a ``Modifier``):

* ``early_commit=True`` (+ ``early_commit_thresholds``, ``answer_region``, ``early_commit_gap``) - Prophet's
  all-in commit on top of any policy.
* ``eotp="reference"|"threshold"`` (+ ``eotp_threshold``) - end-of-text prediction.

Composition order inside one step (``Policy.decide``): logits processors (credit) -> scorer -> selector
(threshold / quota / filter) -> modifiers (early commit, then EoTP). The block schedule (``fixed`` or
``adaptive``) is independent: it sets each row's block from the raw logits of the block's first forward,
before the policy runs, and per-block state (credit) resets when a row opens a block.
"""

from __future__ import annotations

import math
from typing import Any

from dllm.errors import DllmError, check_choice
from dllm.samplers.base import Policy
from dllm.samplers.registry import check_positive, check_probability, register_common_options, register_policy
from dllm.samplers.research.credit import CreditProcessor
from dllm.samplers.research.eotp import MODES as EOTP_MODES
from dllm.samplers.research.eotp import EndOfTextPrediction
from dllm.samplers.research.learned import FilterSelector, default_filter_path, load_filter_cached
from dllm.samplers.research.prophet import (
    DEFAULT_THRESHOLDS,
    GAP_REDUCTIONS,
    EarlyCommit,
    parse_region,
    parse_thresholds,
    prophet_threshold,
    should_exit,
)
from dllm.samplers.scoring import ProbabilityScorer
from dllm.samplers.selectors import QuotaSelector, ThresholdSelector

EARLY_COMMIT_BASES = ("lowconf", "threshold")


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise DllmError(f"{name} must be true or false, got {value!r}")


def _number(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DllmError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise DllmError(f"{name} must be a finite number, got {value!r}")
    return v


def _with_modifier(policy: Policy, modifier: Any, window: str | None, **options: Any) -> Policy:
    policy.modifiers.append(modifier)
    if window is not None:
        policy.window = window
    policy.options.update(options)
    return policy


# --------------------------------------------------------------------------------------------------------
# Options of every policy


@register_common_options(("early_commit", "early_commit_thresholds", "answer_region", "early_commit_gap"),
                         "Prophet early commit on top of any policy")
def apply_early_commit(policy: Policy, early_commit: Any = False, early_commit_thresholds: Any = None,
                       answer_region: Any = None, early_commit_gap: Any = None) -> Policy:
    on = _bool("early_commit", early_commit)
    has = any(isinstance(m, EarlyCommit) for m in policy.modifiers)
    extra = {k: v for k, v in (("early_commit_thresholds", early_commit_thresholds), ("answer_region", answer_region),
                               ("early_commit_gap", early_commit_gap)) if v is not None}
    if has:
        if not on:
            raise DllmError(f"policy {policy.name!r} always commits early; use its base policy instead of early_commit=False")
        return policy
    if not on:
        if extra:
            raise DllmError(f"{sorted(extra)[0]} needs early_commit=True")
        return policy
    thresholds = parse_thresholds(DEFAULT_THRESHOLDS if early_commit_thresholds is None else early_commit_thresholds)
    region = parse_region(answer_region)
    gap = "mean" if early_commit_gap is None else str(early_commit_gap)
    check_choice("early_commit_gap", gap, GAP_REDUCTIONS)
    return _with_modifier(policy, EarlyCommit(thresholds, region, gap), "answer", early_commit=True,
                          early_commit_thresholds=thresholds, answer_region=region, early_commit_gap=gap)


@register_common_options(("eotp", "eotp_threshold"), "Learn2PD end-of-text prediction on top of any policy")
def apply_eotp(policy: Policy, eotp: Any = None, eotp_threshold: Any = None) -> Policy:
    mode = None if eotp in (None, False) or (isinstance(eotp, str) and eotp.lower() in ("off", "none", "false")) else eotp
    if mode is None:
        if eotp_threshold is not None:
            raise DllmError("eotp_threshold needs eotp='threshold'")
        return policy
    check_choice("eotp mode", mode, EOTP_MODES)
    if eotp_threshold is not None and mode != "threshold":
        raise DllmError(f"eotp_threshold applies to eotp='threshold' only, not {mode!r}")
    tau = check_probability("eotp_threshold", 0.9 if eotp_threshold is None else eotp_threshold)
    opts: dict[str, Any] = {"eotp": mode}
    if mode == "threshold":
        opts["eotp_threshold"] = tau
    return _with_modifier(policy, EndOfTextPrediction(mode, tau), "answer", **opts)


# --------------------------------------------------------------------------------------------------------
# Named policies


@register_policy("creditdecoding", "CreditDecoding: decayed trace credits fused into the logits, then the threshold rule")
def creditdecoding(threshold: float = 0.9, credit_alpha: float = 0.7, decay_beta: float = 0.8, boost_gamma: float = 0.2,
                   temperature: float = 0.0) -> Policy:
    tau = check_probability("threshold", threshold)
    alpha = check_positive("credit_alpha", credit_alpha, allow_zero=True)
    beta = check_probability("decay_beta", decay_beta, allow_zero=True)
    gamma = check_positive("boost_gamma", boost_gamma, allow_zero=True)
    t = check_positive("temperature", temperature, allow_zero=True)
    return Policy("creditdecoding", ProbabilityScorer(t), ThresholdSelector(tau), processors=[CreditProcessor(alpha, beta, gamma)],
                  options={"threshold": tau, "credit_alpha": alpha, "decay_beta": beta, "boost_gamma": gamma, "temperature": t})


@register_policy("earlycommit", "Prophet: a base rule (lowconf or threshold) that commits everything once the answer is stable")
def earlycommit(base: str = "lowconf", threshold: float | None = None, temperature: float = 0.0,
                early_commit_thresholds: Any = DEFAULT_THRESHOLDS, answer_region: Any = None,
                early_commit_gap: str = "mean") -> Policy:
    check_choice("earlycommit base", base, EARLY_COMMIT_BASES)
    t = check_positive("temperature", temperature, allow_zero=True)
    if base == "lowconf":
        if threshold is not None:
            raise DllmError("threshold applies to base='threshold' only (base 'lowconf' uses the step quota)")
        policy = Policy("earlycommit", ProbabilityScorer(t), QuotaSelector(), options={"base": base, "temperature": t})
    else:
        tau = check_probability("threshold", 0.9 if threshold is None else threshold)
        policy = Policy("earlycommit", ProbabilityScorer(t), ThresholdSelector(tau),
                        options={"base": base, "threshold": tau, "temperature": t})
    thresholds = parse_thresholds(early_commit_thresholds)
    region = parse_region(answer_region)
    check_choice("early_commit_gap", early_commit_gap, GAP_REDUCTIONS)
    return _with_modifier(policy, EarlyCommit(thresholds, region, early_commit_gap), "answer",
                          early_commit_thresholds=thresholds, answer_region=region, early_commit_gap=early_commit_gap)


@register_policy("learnedfilter", "Learn2PD: a trained filter accepts positions whose prediction is final, plus the most confident")
def learnedfilter(filter_path: str | None = None, threshold: float | None = None, temperature: float = 0.0) -> Policy:
    path = default_filter_path() if filter_path is None else filter_path
    if filter_path is None and not path.is_dir():
        raise DllmError(f"no filter shipped at {str(path)!r}; train one with `dllm train-filter` and pass filter_path=...")
    learned = load_filter_cached(path)
    tau = learned.threshold if threshold is None else _number("threshold", threshold)
    t = check_positive("temperature", temperature, allow_zero=True)
    return Policy("learnedfilter", ProbabilityScorer(t), FilterSelector(learned, tau),
                  options={"filter_path": str(path), "threshold": tau, "temperature": t})


__all__ = [
    "CreditProcessor", "EarlyCommit", "EndOfTextPrediction", "FilterSelector", "prophet_threshold", "should_exit",
    "creditdecoding", "earlycommit", "learnedfilter", "apply_early_commit", "apply_eotp",
]
