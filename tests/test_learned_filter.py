"""The Learn2PD filter shipped for tiny-llada (``dllm/assets/tiny-llada-filter``): where the policy finds it, the
recipe it records (oracle trajectory and the reference's 0.96, docs/methods.md#learn2pd), and that its accept
threshold keeps every synthetic family precise on prompts it never saw (the test split; the filter was trained
on the train split, which excludes the test pool)."""

from __future__ import annotations

import json

import pytest
import torch
from fake_model import ScriptedLM, content_script

import dllm
from dllm.assets import ASSETS_DIR
from dllm.errors import DllmError
from dllm.samplers.learned import DEFAULT_THRESHOLD, default_filter_path, load_filter
from dllm.samplers.registry import make_policy
from dllm.training.filter import THRESHOLD_GRID, collect_filter_data, group_tables, pick_threshold, train_filter

SHIPPED = ASSETS_DIR / "tiny-llada-filter"


def _config():
    return json.loads((SHIPPED / "filter_config.json").read_text())


def test_learnedfilter_without_a_path_uses_the_shipped_filter():
    assert default_filter_path() == SHIPPED and (SHIPPED / "filter.safetensors").is_file()
    pol = make_policy("learnedfilter")
    assert pol.options["filter_path"] == str(SHIPPED) and pol.options["threshold"] == _config()["threshold"]


def test_shipped_filter_records_the_reference_recipe():
    cfg = _config()
    assert cfg["data"]["trajectory"] == "oracle" and cfg["block_length"] == 16 and cfg["model"] == "tiny-llada"
    train = cfg["train"]
    assert train["threshold_rule"] == "reference" and cfg["threshold"] == train["threshold"] == DEFAULT_THRESHOLD == 0.96
    assert load_filter(SHIPPED).threshold == 0.96
    # the stored validation tables: the rule recomputed from them gives the stored threshold; at the stored target
    # the pooled rule (the one before) takes a lower threshold than the worst-group rule, which shuffle holds up
    tables, groups = train["val_thresholds"], train["val_thresholds_by_group"]
    assert set(groups) == {"copy", "reverse", "sort", "add", "gsm-mini", "shuffle"}
    assert pick_threshold(train["threshold_rule"], tables, groups, train["target_precision"]) == cfg["threshold"]
    worst = pick_threshold("worst-group", tables, groups, train["target_precision"])
    assert pick_threshold("pooled", tables, groups, train["target_precision"]) < worst <= cfg["threshold"]
    assert all(t[0]["precision"] >= train["target_precision"] for name, t in groups.items() if name != "shuffle")


@pytest.fixture(scope="module")
def held_out():
    from dllm.evals.synthetic import ANSWER_LENGTH, load_split

    model = dllm.load_model("tiny-llada")
    examples = load_split("test", n_per_family=8)
    data = collect_filter_data(model, [ex.prompt for ex in examples], ANSWER_LENGTH, ANSWER_LENGTH, batch_size=48,
                               groups=[ex.family for ex in examples])
    with torch.no_grad():
        probs = torch.sigmoid(load_filter(SHIPPED).module(data.features.float()))
    return data, probs


def test_shipped_threshold_is_precise_in_every_family_on_held_out_prompts(held_out):
    """At the shipped threshold, every family's precision (accepted positions whose prediction is final) reaches
    the recorded target on held-out prompts, with positions accepted in each; the old rule's 0.5 does not (shuffle)."""
    data, probs = held_out
    cfg = _config()
    tau, target = cfg["threshold"], cfg["train"]["target_precision"]
    tables = group_tables(probs, data, data.valid, grid=(0.5, tau))
    assert set(tables) == {"copy", "reverse", "sort", "add", "gsm-mini", "shuffle"}
    for family, (_, shipped) in tables.items():
        assert shipped["accept_rate"] > 0.3, (family, shipped)
        assert shipped["precision"] >= target, (family, shipped)
    assert tables["shuffle"][0]["precision"] < target, tables["shuffle"]


def _worst_group_pick(probs, data, target):
    """Independent re-derivation of the worst-group rule: the smallest grid value at which every group's accepted
    valid positions (``p > tau``) have precision >= target (none accepted counts as precise), with at least
    one accept overall; else the reference's 0.96."""
    p, y, ok = probs.tolist(), data.labels.tolist(), data.valid.tolist()
    owner = [data.groups[i] for i in data.prompt.tolist()]
    for tau in THRESHOLD_GRID:
        hits: dict[str, list[bool]] = {}
        for r in range(len(p)):
            for j in range(len(p[r])):
                if ok[r][j] and p[r][j] > tau:
                    hits.setdefault(owner[r], []).append(bool(y[r][j]))
        if hits and all(sum(h) / len(h) >= target for h in hits.values()):
            return tau
    return DEFAULT_THRESHOLD


def test_threshold_rules_on_scripted_data():
    model = ScriptedLM(16, 8, content_script(16, seed=1, eos_after=5))
    prompts = [[5 + i % 8, 6 + i // 8, 7] for i in range(12)]
    data = collect_filter_data(model, prompts, gen_length=8, block_length=4, batch_size=4,
                               groups=["even", "odd"] * 6)
    assert data.info["trajectory"] == "oracle" and data.groups == ["even", "odd"] * 6
    kw = dict(iterations=80, patience=1000, val_fraction=0.0)
    module, stats = train_filter(data, **kw)
    assert stats["threshold_rule"] == "reference" and stats["threshold"] == DEFAULT_THRESHOLD
    assert set(stats["val_thresholds_by_group"]) == {"even", "odd"}
    with torch.no_grad():
        probs = torch.sigmoid(module(data.features.float()))
    picks = []
    for target in (0.6, 0.7, 0.9):
        _, worst = train_filter(data, threshold_rule="worst-group", target_precision=target, **kw)
        assert worst["threshold"] == _worst_group_pick(probs, data, target), target
        picks.append(worst["threshold"])
    assert picks[0] < picks[1] < picks[2] == DEFAULT_THRESHOLD, picks  # two grid values and the fallback
    no_groups = collect_filter_data(model, prompts[:4], gen_length=8, block_length=4)
    with pytest.raises(DllmError, match="groups"):
        train_filter(no_groups, threshold_rule="worst-group", **kw)
    with pytest.raises(DllmError, match="threshold rule"):
        train_filter(data, threshold_rule="best", **kw)


def test_worst_group_rule_on_hand_made_tables():
    def table(*precisions, rate=0.5):
        return [{"threshold": t, "precision": p, "recall": 1.0, "accept_rate": rate} for t, p in zip(THRESHOLD_GRID, precisions)]

    pooled = table(0.99, 0.995, 0.999, 1.0)  # 0.5, 0.6, 0.7, 0.8: pooled precision is high from 0.5 on
    groups = {"easy": table(1.0, 1.0, 1.0, 1.0), "hard": table(0.49, 0.9, 0.97, 1.0)}
    assert pick_threshold("pooled", pooled, groups, 0.99) == 0.5
    assert pick_threshold("worst-group", pooled, groups, 0.99) == 0.8  # the hard group holds it up
    assert pick_threshold("worst-group", pooled, groups, 0.95) == 0.7
    assert pick_threshold("reference", pooled, groups, 0.5) == DEFAULT_THRESHOLD
    # no accepts anywhere at a grid value: not eligible; no grid value qualifies: the reference's 0.96
    assert pick_threshold("worst-group", table(1.0, 1.0, rate=0.0) + pooled[2:], groups, 0.95) == 0.7
    assert pick_threshold("worst-group", pooled, {"hard": table(0.5, 0.5, 0.5, 0.5)}, 0.9) == DEFAULT_THRESHOLD
    with pytest.raises(DllmError, match="groups"):
        pick_threshold("worst-group", pooled, {}, 0.9)
