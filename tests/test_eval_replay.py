"""``dllm eval --replay``: one "replay" row per cache, the fewest forwards that reproduce lowconf's one-token-per-step
output with that cache (``dllm.samplers.oracle.replay_policy``), beside every policy.

Pinned here on the shipped tiny-llada (synthetic, 2 per family): the replay's texts equal the baseline's exactly and
its reference is the baseline decode itself (same NFE per sample), its NFE is at most the baseline's and far below
it in total (a replay that just decoded the reference again fails here), it has no wall-clock figures and takes no
part in the timing rounds, ``--cache none,dual`` gives one replay row per cache (the dual one reproduces lowconf
*with the dual cache*, checked against a direct decode), its records never share a file or fingerprint with
lowconf's, and the frontier plot marks it with its own marker and label. On a random-weight model the fallback
path fires and is counted.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

import dllm
from dllm.cli.app import main
from dllm.errors import DllmError
from dllm.evals import runner
from dllm.evals.report import REPLAY_LABEL, plan_runs

BASE_TAG = "lowconf_g16-b16-s16"


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def _header(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[0])["_header"]["config"]


def _cli(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One ``dllm eval --cache none,dual --replay`` on the shipped model, with every runner.evaluate call seen."""
    out = tmp_path_factory.mktemp("replay")
    calls = []
    real = runner.evaluate

    def spy(model, bench, policy, options, **kw):
        calls.append((kw["replay"], kw["cache"], len(kw["samples"])))
        return real(model, bench, policy, options, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "evaluate", spy)
        code, text = _cli("eval", "--bench", "synthetic", "--policy", "threshold", "--cache", "none,dual", "--replay",
                          "--limit", "2", "--out", str(out), "--no-progress", "--batch-size", "4", "--no-continuous")
    assert code == 0, text
    d = out / "synthetic"
    return {"dir": d, "text": text, "calls": calls, "report": json.loads((d / "report.json").read_text())}


def _row(run, label):
    return next(r for r in run["report"]["rows"] if r["label"] == label)


def test_one_replay_row_per_cache(run):
    rows = run["report"]["rows"]
    assert [r["label"] for r in rows] == ["lowconf (baseline)", "threshold", "threshold cache=dual",
                                          "replay cache=none", "replay cache=dual"]
    assert [(r["cache"], r["policy"]) for r in rows if r["replay"]] == [("none", "lowconf"), ("dual", "lowconf")]
    assert not any(r["replay"] for r in rows[:3])


def test_replay_reproduces_the_baseline_texts_in_fewer_forwards(run):
    d = run["dir"]
    base = {r["id"]: r for r in _records(d / f"{BASE_TAG}.jsonl")}
    rep = {r["id"]: r for r in _records(d / "replay_g16-b16-s16.jsonl")}
    assert set(rep) == set(base) and len(rep) == 12
    for i, r in rep.items():
        assert r["completion"] == base[i]["completion"] and r["scores"] == base[i]["scores"], i
        assert r["reference_nfe"] == base[i]["nfe"] == 16, i  # its reference is the baseline decode itself
        assert r["nfe"] <= base[i]["nfe"] and r["policy"] == "replay" and r["latency_s"] is None, i
    # the tiny model predicts most answers at once: a replay that re-decoded one token per step would spend 16 each
    assert sum(r["nfe"] for r in rep.values()) <= 2 * len(rep)
    row, b = _row(run, "replay cache=none"), _row(run, "lowconf (baseline)")
    assert row["accuracy"] == b["accuracy"]
    assert row["mean_nfe"] == sum(r["nfe"] for r in rep.values()) / 12
    assert row["speedup_nfe"] == pytest.approx(b["mean_nfe"] / row["mean_nfe"]) and row["speedup_nfe"] > 8
    assert row["fallbacks"] == sum(r["fallbacks"] for r in rep.values())
    assert row["reference_mean_nfe"] == 16.0


def test_the_dual_replay_reproduces_lowconf_with_the_dual_cache(run):
    """Against a direct one-token-per-step decode with the dual cache, which here differs from the no-cache one."""
    rep = _records(run["dir"] / "replay_cache-dual_g16-b16-s16.jsonl")
    model = dllm.load_model("tiny-llada")
    samples = {str(s.id): s for s in runner.load_samples(model, "synthetic", limit=2)}
    ids = [samples[str(r["id"])].ids for r in rep]
    direct = dllm.generate(model, ids, policy="lowconf", gen_length=16, block_length=16, steps=16, cache="dual")
    nocache = dllm.generate(model, ids, policy="lowconf", gen_length=16, block_length=16, steps=16)
    assert [r["completion"] for r in rep] == direct.texts
    assert [r["reference_nfe"] for r in rep] == direct.seq_nfe
    assert direct.texts != nocache.texts  # so the row would fail if the replay ignored its cache
    assert _row(run, "replay cache=dual")["accuracy"] != _row(run, "replay cache=none")["accuracy"]


def test_replay_has_no_wall_clock_and_is_not_timed(run):
    for label in ("replay cache=none", "replay cache=dual"):
        row = _row(run, label)
        assert row["speedup_nfe"] is not None
        assert all(row[k] is None for k in ("speedup_time", "speedup_time_interval", "speedup_throughput",
                                            "tokens_per_s", "mean_latency_s")), label
        line = next(ln for ln in run["text"].splitlines() if ln.startswith("│ " + label))
        cells = [c.strip() for c in line.strip("│").split("│")]
        assert cells[-4:] == ["-", "-", f"{row['speedup_nfe']:.2f}x", "-"], cells  # tok/s, s/sample, xNFE, xtime
    assert _row(run, "threshold cache=dual")["speedup_time_interval"] is not None
    # 12 samples in static batches of 4: 3 rounds of the three timed runs, replays only in the final pass
    rounds = [c for c in run["calls"] if c[2] == 4]
    assert run["report"]["timing_rounds"] == 3 and len(rounds) == 9 and not any(rep for rep, _, _ in rounds)
    assert sorted((c, n) for rep, c, n in run["calls"] if rep) == [("dual", 12), ("none", 12)]
    assert "replay cache=C = the fewest forwards" in " ".join(run["text"].split())


def test_replay_records_never_mix_with_lowconf_records(run):
    d = run["dir"]
    assert _header(d / "replay_g16-b16-s16.jsonl")["replay"] is True
    assert "replay" not in _header(d / f"{BASE_TAG}.jsonl")
    summary = json.loads((d / "replay_g16-b16-s16.summary.json").read_text())
    assert summary["replay"] is True and summary["tag"] == "replay_g16-b16-s16"
    assert summary["fingerprint"] != json.loads((d / f"{BASE_TAG}.summary.json").read_text())["fingerprint"]


def test_the_frontier_plot_marks_replay(run, tmp_path):
    pytest.importorskip("matplotlib")
    from dllm.evals.report import plot_frontier

    report = run["report"]
    fig = plot_frontier(report, str(tmp_path / "f.png"))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["threshold", "threshold cache=dual", "lowconf (baseline)", f"{REPLAY_LABEL} cache=none",
                      f"{REPLAY_LABEL} cache=dual"]
    for cache in ("none", "dual"):
        art = next(c for c in ax.collections if c.get_label() == f"{REPLAY_LABEL} cache={cache}")
        row = _row(run, f"replay cache={cache}")
        assert art.get_offsets().tolist() == [[row["tpf"], 100 * row["accuracy"]["correct"]]]
        marker = next(c for c in ax.collections if c.get_label() == "lowconf (baseline)")
        assert art.get_paths()[0].vertices.tolist() != marker.get_paths()[0].vertices.tolist()  # its own marker
    assert len(ax.get_lines()) == 2  # the policies' lines; replays are no line
    one = {**report, "rows": [r for r in report["rows"] if r["label"] != "replay cache=dual"]}
    fig = plot_frontier(one, str(tmp_path / "g.png"))
    assert REPLAY_LABEL in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_fallbacks_fire_and_are_counted_on_a_random_model(tmp_path):
    from dllm.models.tiny import make_tiny_checkpoint

    # at these sizes a random model's argmax moves with the context, so the replay often finds no match
    ckpt = make_tiny_checkpoint(tmp_path / "tiny", "llada", vocab_size=128, hidden=64, layers=2, heads=2,
                                intermediate=128, max_length=256)
    model = dllm.load_model(str(ckpt))
    kw = {"limit": 1, "out_dir": tmp_path / "out", "progress": False, "batch_size": 3}
    base = runner.evaluate(model, "synthetic", "lowconf", steps=16, **kw)
    rep = runner.evaluate(model, "synthetic", "lowconf", replay=True, **kw)
    brecs = {r["id"]: r for r in _records(Path(base["records"]))}
    recs = _records(Path(rep["records"]))
    assert [r["completion"] for r in recs] == [brecs[r["id"]]["completion"] for r in recs]
    assert all(r["nfe"] <= r["reference_nfe"] == brecs[r["id"]]["nfe"] for r in recs)
    assert sum(r["nfe"] for r in recs) < sum(r["reference_nfe"] for r in recs)
    assert rep["fallbacks"] == sum(r["fallbacks"] for r in recs) > 0
    assert rep["total_latency_s"] is None and rep["tokens_per_s"] is None


def test_replay_runs_and_their_errors():
    runs = plan_runs(["threshold"], {"threshold": 0.8, "refresh": 2}, ["none", "dual"], ["fixed", "adaptive"], None,
                     True, None, replay=True)
    rep = [(r.label, r.options) for r in runs if r.replay]
    assert rep == [("replay cache=none", {}), ("replay cache=none schedule=adaptive", {}),
                   ("replay cache=dual refresh=2", {"refresh": 2}),
                   ("replay cache=dual refresh=2 schedule=adaptive", {"refresh": 2})]
    assert not any(r.replay for r in plan_runs(["threshold"], {}, "none", "fixed", None, True, None))
    model = dllm.load_model("tiny-llada")
    for policy, opts, steps, msg in (("threshold", {}, None, "policy 'threshold'"),
                                     ("lowconf", {"temperature": 0.5}, None, "policy option 'temperature'"),
                                     ("lowconf", {}, 8, "steps must equal gen_length 16, got 8")):
        with pytest.raises(DllmError, match=msg) as info:
            runner.evaluate(model, "synthetic", policy, opts, steps=steps, replay=True, limit=1, out_dir="/nonexistent")
        assert "\n" not in str(info.value)
