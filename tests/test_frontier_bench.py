"""``benchmarks/frontier.py``: the per-policy summary against threshold 0.9 (hand-made rows, one cache and two), the
quota step budgets at gen 256 / block 32, a run on a tiny slice of the synthetic suite (1 example per family, two
policies) whose table and JSON carry the replay point and the default markers, and runs on one example of the
GSM8K-format (threshold, dual cache) and HumanEval-format (turbo, dual cache) workload sets."""

from __future__ import annotations

import json

import pytest
from fake_model import load_repo_script


@pytest.fixture(scope="module")
def frontier():
    return load_repo_script("benchmarks/frontier.py", "frontier_bench")


def _row(policy, group, acc, nfe, default=False, baseline=False, replay=False, cache="none", label=None, **more):
    return {"policy": policy, "group": group, "label": label or f"{group} {acc} {nfe}", "cache": cache,
            "accuracy": {"correct": acc}, "mean_nfe": nfe, "tpf": 1.0, "default": default, "baseline": baseline,
            "replay": replay, "knob": "k", "value": nfe, **more}


def test_summary_picks_fewest_forwards_within_half_a_point_of_threshold_09(frontier):
    rows = [
        _row("lowconf", "", 1.0, 16.0, default=True, baseline=True),
        _row("threshold", "threshold", 0.95, 4.0, default=True),   # the reference: 95.0%, 4 NFE -> floor 94.5%
        _row("threshold", "threshold", 0.90, 3.0),                 # 90.0 < 94.5: out
        _row("x", "x", 0.946, 2.9),                                # 94.6 >= 94.5: in, 1 - 2.9/4 = 0.275 >= 0.25
        _row("x", "x", 0.944, 1.0),                                # 94.4 < 94.5: out, though the fewest forwards
        _row("x", "x", 1.0, 3.5, default=True),
        _row("y", "y", 0.95, 3.2, default=True),                   # 1 - 3.2/4 = 0.2 < 0.25
        _row("z", "z", 0.90, 1.0, default=True),                   # nothing within the tolerance
        _row("w", "w", 0.97, 2.0),                                 # tie on NFE and accuracy: the default wins
        _row("w", "w", 0.97, 2.0, default=True, label="w default"),
        _row("lowconf", "", 1.0, 2.0, replay=True, label="replay cache=none"),  # 1 - 2/4 = 0.5
    ]
    by = {s["group"]: s for s in frontier.summarize(rows)}
    assert list(by) == ["lowconf", "threshold", "x", "y", "z", "w", "replay cache=none"]
    assert by["x"]["best"]["mean_nfe"] == 2.9 and by["x"]["fewer_forwards"] == pytest.approx(0.275)
    assert by["x"]["meets_target"] is True and by["x"]["default"]["mean_nfe"] == 3.5
    assert by["y"]["fewer_forwards"] == pytest.approx(0.2) and by["y"]["meets_target"] is False
    assert by["z"]["best"] is None and by["z"]["meets_target"] is False
    assert by["threshold"]["best"]["mean_nfe"] == 4.0 and by["threshold"]["fewer_forwards"] == 0
    assert by["lowconf"]["fewer_forwards"] == pytest.approx(1 - 16 / 4)  # the baseline sits in lowconf's group
    assert by["w"]["best"]["label"] == "w default"
    assert by["replay cache=none"]["replay"] and by["replay cache=none"]["fewer_forwards"] == pytest.approx(0.5)
    assert "met by x" in frontier.verdict(list(by.values()))  # the replay is a reference point, not a policy
    assert "replay" not in frontier.verdict(list(by.values()))


def test_summary_compares_each_cache_with_threshold_09_at_that_cache(frontier):
    rows = [
        _row("lowconf", "", 1.0, 16.0, default=True, baseline=True),
        _row("threshold", "threshold", 0.95, 8.0, default=True),                       # reference, no cache
        _row("threshold", "threshold cache=dual", 0.90, 4.0, default=True, cache="dual"),  # reference, dual
        # dual ref: floor 89.5, 89.6 in, 1 - 2.9/4 = 0.275 (yes); the no-cache ref's floor 94.5 would drop it
        _row("x", "x cache=dual", 0.896, 2.9, default=True, cache="dual"),
        # no-cache ref: 1 - 5/8 = 0.375 (yes); against the dual ref's 4 NFE it would be 1 - 5/4 = -0.25 (no)
        _row("y", "y", 0.95, 5.0, default=True),
        # a preset that brings the dual cache, run with --cache none: 1 - 3/4 = 0.25 against the dual ref (yes);
        # against the no-cache ref 90.0 < 94.5 (no point qualifies)
        _row("p", "p", 0.90, 3.0, default=True, effective_cache="dual"),
        _row("lowconf", "", 0.90, 1.0, replay=True, cache="dual", label="replay cache=dual"),  # 1 - 1/4 = 0.75
    ]
    by = {s["group"]: s for s in frontier.summarize(rows)}
    assert by["x cache=dual"]["reference"]["mean_nfe"] == 4.0
    assert by["x cache=dual"]["fewer_forwards"] == pytest.approx(0.275) and by["x cache=dual"]["meets_target"]
    assert by["y"]["reference"]["mean_nfe"] == 8.0
    assert by["y"]["fewer_forwards"] == pytest.approx(0.375) and by["y"]["meets_target"]
    assert by["p"]["cache"] == "dual" and by["p"]["reference"]["mean_nfe"] == 4.0
    assert by["p"]["fewer_forwards"] == pytest.approx(0.25) and by["p"]["meets_target"]
    assert by["replay cache=dual"]["fewer_forwards"] == pytest.approx(0.75)
    assert by["lowconf"]["reference"]["mean_nfe"] == 8.0  # the baseline decodes without a cache
    text = frontier.verdict(list(by.values()))
    assert text == ("target (>= 25% fewer forwards than threshold 0.9, 8.00 NFE at 95.0%, within 0.5 points): met "
                    "by y; target (>= 25% fewer forwards than threshold 0.9 with cache dual, 4.00 NFE at 90.0%, "
                    "within 0.5 points): met by x cache=dual, p")
    with pytest.raises(frontier.DllmError, match="mixes caches"):
        frontier.summarize([rows[1], _row("threshold", "threshold", 0.9, 4.0, effective_cache="dual")])


def test_quota_step_budgets_divide_each_block(frontier, monkeypatch):
    """gen 256 / block 32 (8 blocks): k tokens per step needs k | 32, giving steps 256 / k, a multiple of the 8
    blocks. 64 divides 256 but not 32 (4 steps for 8 blocks: refused by the fixed schedule); 3 divides neither."""
    from dllm.evals import runner
    from dllm.evals.settings import Lengths

    monkeypatch.setitem(frontier.SWEEPS, "lowconf", ("steps", (1, 2, 3, 4, 8, 64)))
    points = frontier.plan(["lowconf"], ["dual"], Lengths(256, 32, 256))
    swept = [p for p in points if p.knob == "steps" and not p.run.baseline]
    assert [p.run.lengths.steps for p in swept] == [256, 128, 64, 32]
    assert [p.default for p in swept] == [True, False, False, False]
    for p in points:
        runner.check_run(p.run.policy, p.run.options, p.run.cache, p.run.schedule, p.run.lengths)
    # the synthetic suite (gen = block = 16) keeps its budgets 16, 8, 4
    monkeypatch.setitem(frontier.SWEEPS, "lowconf", ("steps", (1, 2, 4)))
    points = frontier.plan(["lowconf"], ["none"], Lengths(16, 16, 16))
    assert sorted(p.run.lengths.steps for p in points if not p.run.baseline and not p.run.replay) == [4, 8, 16]


def test_wino_sweep_marks_the_registry_default_and_every_knob_is_declared(frontier):
    from dllm.evals.settings import Lengths
    from dllm.samplers.registry import POLICIES

    default = POLICIES.get("wino").validate({})["threshold"]
    points = [p for p in frontier.plan(["wino"], ["none"], Lengths(16, 16, 16)) if p.run.policy == "wino"]
    values = [p.value for p in points]
    assert {0.5, 0.6, 0.7, 0.8, 0.9} <= set(values) and default in values and len(values) == len(set(values))
    assert [p.value for p in points if p.default] == [default]
    # every sweep knob of a registered policy is one of its declared options (saber's n, wino's threshold, ...)
    for name, (knob, _values) in frontier.SWEEPS.items():
        if name in POLICIES.names() and knob not in (None, frontier.STEPS):
            assert knob in POLICIES.get(name).option_names(), (name, knob)


def test_freedave_threshold_variant_is_its_own_group(frontier):
    """VARIANTS: freedave base=threshold (FreeDave++) is planned as a group of its own, swept over its threshold,
    never marked as freedave's default; the plain freedave sweep keeps its default point."""
    from dllm.evals.settings import Lengths

    points = [p for p in frontier.plan(["freedave"], ["none"], Lengths(16, 16, 16)) if p.run.policy == "freedave"]
    variant = [p for p in points if p.run.options.get("base") == "threshold"]
    assert [p.value for p in variant] == [0.7, 0.9, 0.95] and not any(p.default for p in variant)
    assert {p.run.group for p in variant} == {"freedave base=threshold"}
    plain = [p for p in points if "base" not in p.run.options]
    assert {p.run.group for p in plain} == {"freedave"} and [p.value for p in plain if p.default] == [4]


def test_threshold_group_is_marked_as_the_reference(frontier):
    """The summary table's target column says "reference" for threshold's own group: the verdict never counts it."""
    row = {"accuracy": {"correct": 1.0}, "cache": "none", "baseline": False, "swept": True, "knob": "threshold",
           "tpf": 8.0, "replay": False}
    rows = [{**row, "policy": "threshold", "group": "threshold", "label": "threshold threshold=0.9", "value": 0.9,
             "default": True, "mean_nfe": 2.0},
            {**row, "policy": "threshold", "group": "threshold", "label": "threshold threshold=0.5", "value": 0.5,
             "default": False, "mean_nfe": 1.0}]
    summary = frontier.summarize(rows)
    assert summary[0]["meets_target"] is True  # threshold 0.5 halves the forwards here ...
    table = frontier.format_tables({"rows": rows, "primary_metric": "correct"}, summary)
    assert table.splitlines()[-1].split(" | ")[5] == "reference"  # ... yet it is the reference, not a candidate
    assert "met by no policy" in frontier.verdict(summary)


def test_tiny_run_has_replay_point_and_default_markers(frontier, tmp_path, capsys):
    out, js, png = tmp_path / "runs", tmp_path / "f.json", tmp_path / "f.png"
    rc = frontier.main(["--limit", "1", "--policies", "threshold,freedave", "--out", str(out), "--json", str(js),
                        "--png", str(png)])
    text = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(js.read_text())
    rows = doc["rows"]
    assert rows[0]["n"] == 6  # 1 per family, 6 families
    # the registry defaults, and only they, are marked: lowconf steps=16 (the baseline), threshold 0.9, draft_steps 4
    marked = sorted((r["policy"], r["knob"], r["value"]) for r in rows if r["default"])
    assert marked == [("freedave", "draft_steps", 4), ("lowconf", "steps", 16), ("threshold", "threshold", 0.9)]
    assert sorted(r["value"] for r in rows if r["policy"] == "threshold") == [0.5, 0.7, 0.8, 0.9, 0.95]
    assert "| threshold | threshold=0.9 (default) |" in text and "| freedave | draft_steps=4 (default) |" in text
    # one replay point: the baseline's texts (so its accuracy) in at most the baseline's forwards
    base = next(r for r in rows if r["baseline"])
    replays = [r for r in rows if r["replay"]]
    assert len(replays) == 1 and replays[0]["cache"] == "none" and not replays[0]["default"]
    assert replays[0]["accuracy"] == base["accuracy"] and 1 <= replays[0]["mean_nfe"] <= base["mean_nfe"] == 16
    assert "| replay (1 tok/step output, fewest forwards) | cache=none" in text
    groups = [s["group"] for s in doc["summary"]]
    assert groups == ["lowconf", "threshold", "freedave", "freedave base=threshold", "replay cache=none"]
    assert doc["command"].startswith("python benchmarks/frontier.py --limit 1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _records(row):
    """The JSONL records behind a report row (its summary names the file)."""
    path = json.loads(open(row["summary"], encoding="utf-8").read())["records"]
    return [json.loads(line) for line in open(path, encoding="utf-8") if '"_header"' not in line]


def test_gsm8k_run_compares_dual_cache_points_with_threshold_09_at_dual(frontier, tmp_path, capsys):
    from dllm.evals import generators

    js = tmp_path / "g.json"
    rc = frontier.main(["--bench", "gsm8k", "--cache", "dual", "--limit", "1", "--num-fewshot", "0", "--policies",
                        "threshold", "--out", str(tmp_path / "runs"), "--json", str(js), "--png",
                        str(tmp_path / "g.png")])
    text = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(js.read_text())
    # the benchmark's own model, lengths, chat setting, metric and data
    assert doc["bench"] == "gsm8k" and doc["model"] == "workload-llada" and doc["chat"] is True
    assert doc["primary_metric"] == "flexible_extract" and doc["limit"] == 1
    assert doc["lengths"] == {"gen_length": 256, "block_length": 32, "steps": 256}
    assert doc["bench_options"]["num_fewshot"] == 0
    first = json.loads(generators.GSM8K_TEST.read_text(encoding="utf-8").splitlines()[0])
    rows = doc["rows"]
    assert all(r["n"] == 1 for r in rows)
    assert first["question"] in _records(rows[0])[0]["prompt"]
    assert "accuracy = flexible %" in text and "gen 256 / block 32, chat on" in text
    # rows per cache: the baseline without a cache, every threshold point and the replay with the dual cache
    base = [r for r in rows if r["baseline"]]
    assert len(base) == 1 and base[0]["cache"] == "none" and base[0]["mean_nfe"] <= 256
    pts = [r for r in rows if r["policy"] == "threshold"]
    assert {r["cache"] for r in pts} == {"dual"} and sorted(r["value"] for r in pts) == [0.5, 0.7, 0.8, 0.9, 0.95]
    ref = next(r for r in pts if r["default"])
    assert ref["value"] == 0.9 and ref["cache"] == "dual"
    replays = [r for r in rows if r["replay"]]
    assert len(replays) == 1 and replays[0]["cache"] == "dual"
    # the summary: every dual group against threshold 0.9 at dual, its ratio from the report's own numbers
    by = {s["group"]: s for s in doc["summary"]}
    assert list(by) == ["lowconf", "threshold cache=dual", "replay cache=dual"]
    assert by["lowconf"]["reference"] is None  # the baseline has no cache and no threshold point runs without one
    floor = 100 * ref["accuracy"]["flexible_extract"] - 0.5
    for group, members in (("threshold cache=dual", pts), ("replay cache=dual", replays)):
        s = by[group]
        assert s["reference"]["label"] == ref["label"] and s["reference"]["mean_nfe"] == ref["mean_nfe"]
        best = min(r["mean_nfe"] for r in members if 100 * r["accuracy"]["flexible_extract"] >= floor - 1e-9)
        assert s["best"]["mean_nfe"] == best
        assert s["fewer_forwards"] == pytest.approx(1 - best / ref["mean_nfe"])
    assert f"threshold 0.9 with cache dual, {ref['mean_nfe']:.2f} NFE" in doc["verdict"]
    # a no-cache threshold 0.9 point with other numbers changes nothing for the dual groups
    other = {**ref, "cache": "none", "effective_cache": "none", "group": "threshold", "mean_nfe": ref["mean_nfe"] + 7}
    again = {s["group"]: s for s in frontier.summarize(rows + [other], "flexible_extract")}
    assert again["threshold cache=dual"]["reference"]["mean_nfe"] == ref["mean_nfe"]
    assert again["threshold cache=dual"]["fewer_forwards"] == pytest.approx(by["threshold cache=dual"]["fewer_forwards"])


def test_humaneval_run_uses_pass_at_1_and_the_shipped_set(frontier, tmp_path, capsys):
    from dllm.evals import generators

    js = tmp_path / "h.json"
    rc = frontier.main(["--bench", "humaneval", "--cache", "dual", "--limit", "1", "--policies", "turbo", "--out",
                        str(tmp_path / "runs"), "--json", str(js), "--png", str(tmp_path / "h.png")])
    text = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(js.read_text())
    assert doc["bench"] == "humaneval" and doc["model"] == "workload-llada" and doc["primary_metric"] == "passed"
    assert doc["lengths"] == {"gen_length": 256, "block_length": 32, "steps": 256} and doc["chat"] is True
    first = json.loads(generators.HUMANEVAL_TEST.read_text(encoding="utf-8").splitlines()[0])
    rows = doc["rows"]
    assert [r["task_id"] for r in _records(rows[0])] == [first["task_id"]]
    assert [(r["label"], r["cache"], r.get("effective_cache")) for r in rows] == [
        ("lowconf (baseline)", "none", "none"), ("turbo cache=dual", "dual", "dual"),
        ("replay cache=dual", "dual", "dual")]
    assert all(s["reference"] is None for s in doc["summary"])
    assert doc["verdict"] == "no threshold 0.9 point in this run: no comparison" and "accuracy = pass@1 %" in text
