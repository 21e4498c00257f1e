"""``benchmarks/frontier.py``: the per-policy summary against threshold 0.9 (hand-made rows), and a run on a tiny
slice (1 example per family, two policies) whose table and JSON carry the replay point and the default markers."""

from __future__ import annotations

import json

import pytest
from fake_model import load_repo_script


@pytest.fixture(scope="module")
def frontier():
    return load_repo_script("benchmarks/frontier.py", "frontier_bench")


def _row(policy, group, acc, nfe, default=False, baseline=False, replay=False, cache="none", label=None):
    return {"policy": policy, "group": group, "label": label or f"{group} {acc} {nfe}", "cache": cache,
            "accuracy": {"correct": acc}, "mean_nfe": nfe, "tpf": 1.0, "default": default, "baseline": baseline,
            "replay": replay, "knob": "k", "value": nfe}


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
    assert groups == ["lowconf", "threshold", "freedave", "replay cache=none"]
    assert doc["command"].startswith("python benchmarks/frontier.py --limit 1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
