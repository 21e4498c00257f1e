"""Issue #13's rule for defaults: no research policy loses more than one point of accuracy to ``threshold`` 0.9 at
its default setting. Measured on the synthetic suite (the workload benches need a trained workload model) with
the shipped tiny model, 20 test examples per family (n = 120, one example = 0.83 points), gen = block = 16, no
cache: the ``dllm eval --bench synthetic --limit 20`` setting, decoded through the eval runner.

"Research policy" is every registered policy and preset except the fixed-quota baselines (``BASELINES``:
LLaDA's and Dream's step-budget rules, which take one forward per token) and the reference point itself, so a
newly registered policy is held to the rule without editing this file."""

from __future__ import annotations

import pytest

from dllm.evals.runner import evaluate
from dllm.samplers.registry import POLICIES, PRESETS

LIMIT = 20
REFERENCE = "threshold"
#: the reference point: Fast-dLLM's threshold rule at 0.9 (given, not read from the registry's default)
REFERENCE_OPTIONS = {"threshold": 0.9}
#: threshold 0.9 decodes every example of this split but one at most: below this the comparison is void
REFERENCE_FLOOR = 99.0
#: the one-token-per-step quota rules: the baselines, not accelerated decoders (docs/methods.md#llada, #dream)
BASELINES = {"lowconf", "random", "maskgit_plus", "topk_margin", "entropy"}
MAX_LOSS_POINTS = 1.0


def research_policies() -> list[str]:
    return [n for n in [*POLICIES.names(), *PRESETS.names()] if n not in BASELINES and n != REFERENCE]


def accuracy(tiny, policy: str, tmp_path, options=None) -> float:
    summary = evaluate(tiny, "synthetic", policy, options, limit=LIMIT, batch_size=LIMIT, out_dir=tmp_path / policy,
                       progress=False, warmup=False)
    assert summary["n"] == 6 * LIMIT
    return 100.0 * summary["accuracy"][summary["primary_metric"]]


@pytest.fixture(scope="module")
def reference_accuracy(tiny, tmp_path_factory):
    acc = accuracy(tiny, REFERENCE, tmp_path_factory.mktemp("reference"), REFERENCE_OPTIONS)
    assert acc >= REFERENCE_FLOOR, f"{REFERENCE} 0.9 scores {acc:.1f}%: the reference run itself is broken"
    return acc


def test_the_research_set_is_the_registry():
    names = research_policies()
    assert {"creditdecoding", "earlycommit", "learnedfilter", "wino", "saber", "freedave", "turbo"} <= set(names)
    assert BASELINES <= set(POLICIES.names())  # a renamed baseline would otherwise be silently held to nothing


@pytest.mark.parametrize("policy", research_policies())
def test_default_loses_at_most_one_point_to_threshold(tiny, policy, reference_accuracy, tmp_path):
    acc = accuracy(tiny, policy, tmp_path)
    assert acc >= reference_accuracy - MAX_LOSS_POINTS, (
        f"{policy} at its defaults: {acc:.1f}% vs {REFERENCE} 0.9's {reference_accuracy:.1f}%")
