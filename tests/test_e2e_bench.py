"""CI smoke test of ``benchmarks/e2e.py --quick``: every configuration is measured, the forwards are counted by
kind as the fixed schedule implies, every number is positive and the weight-streaming bound is the weights' bytes
over the bandwidth."""

from __future__ import annotations

import json

import pytest
from fake_model import load_repo_script


@pytest.fixture(scope="module")
def e2e():
    return load_repo_script("benchmarks/e2e.py", "e2e_bench")


# The --quick schedule: gen_length 32 in blocks of 16, 8 lowconf steps -> 2 blocks of 4 steps each, 8 forwards.
# none: all 8 full. prefix/dual: a full forward at each block's step 0, cached at steps 1-3 -> 2 full, 6 cached.
# delayed (refresh 8, step1_full): full at steps 0 and 1 of each block, cached at steps 2-3 -> 4 full, 4 cached.
FORWARDS = {"none": (8, 0), "prefix": (2, 6), "dual": (2, 6), "delayed": (4, 4)}

# Weights one forward reads (fp32, 4 bytes each), every parameter but the embedding table:
# llada-quick (d 128, 2 layers, MLP 256, vocab 2048): per layer q,k,v,out 4*128*128 = 65536, gate/up/down
#   3*128*256 = 98304, two norms 256 -> 164096; x2 = 328192; ln_f 128; head 2048*128 = 262144 -> 590464 params.
# dream-quick (4 heads of 32, 2 kv heads): q 128*128+128, k and v 128*64+64 each, o 128*128 -> 49408; MLP 98304;
#   norms 256 -> 147968; x2 = 295936; norm 128; lm_head 262144 -> 558208 params.
WEIGHT_BYTES = {"llada-quick": 590464 * 4, "dream-quick": 558208 * 4}


def test_quick_run_measures_every_configuration(e2e, tmp_path, capsys):
    out = tmp_path / "e2e.json"
    assert e2e.main(["--quick", "--device", "cpu", "--bandwidth", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = data["rows"]
    want = {(m, b, c) for m in WEIGHT_BYTES for b in (1, 4) for c in FORWARDS}
    assert {(r["model"], r["batch"], r["cache"]) for r in rows} == want
    assert len(rows) == len(want)
    assert data["meta"]["bandwidth_gbs"] == 20 and data["meta"]["schedule"]["gen_length"] == 32
    assert data["errors"] == []
    for r in rows:
        full, cached = FORWARDS[r["cache"]]
        assert (r["full_per_call"], r["cached_per_call"]) == (full, cached), r
        assert r["steps"] == 8
        assert r["full_ms"] > 0 and r["call_s"] > 0 and r["tokens_per_s"] > 0 and r["peak_mem_gib"] > 0
        assert r["other_ms_per_step"] >= 0
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * 32 / r["call_s"])
        # the forwards fit inside the call they were timed in, and 'other' is the rest of the call
        forwards_ms = full * r["full_ms"] + cached * (r["cached_ms"] or 0)
        assert forwards_ms / 1000 <= max(r["calls"]) * 1.001
        mean_call_ms = sum(r["calls"]) / len(r["calls"]) * 1000
        assert forwards_ms + 8 * r["other_ms_per_step"] == pytest.approx(mean_call_ms, rel=1e-6)
        assert r["bound_ms"] == pytest.approx(WEIGHT_BYTES[r["model"]] / 20e9 * 1000)
        if r["cache"] == "none":
            assert r["cached_ms"] is None and r["cached_over_bound"] is None
        else:
            assert r["cached_ms"] > 0
            assert r["cached_over_bound"] == pytest.approx(r["cached_ms"] / r["bound_ms"])
        assert r["same_tokens"] is None  # only compiled modes are compared with eager
    table = [line for line in printed.splitlines() if line.startswith("| ") and "-quick |" in line]
    assert len(table) == len(want)
    assert all(line.count("|") == e2e.HEADER.count("|") for line in table)
    assert "dual/none tokens/s" in printed


def test_a_failing_configuration_is_recorded_and_the_run_goes_on(e2e, tmp_path, monkeypatch, capsys):
    measure = e2e.measure

    def flaky(model, name, prompts, cache, *args, **kwargs):
        if cache == "prefix":
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")
        return measure(model, name, prompts, cache, *args, **kwargs)

    monkeypatch.setattr(e2e, "measure", flaky)
    out = tmp_path / "e2e.json"
    assert e2e.main(["--quick", "--device", "cpu", "--run", "llada-quick:1:none,prefix,dual:torch:none",
                     "--repeats", "1", "--out", str(out)]) == 1
    data = json.loads(out.read_text())
    assert [r["cache"] for r in data["rows"]] == ["none", "dual"]
    assert data["errors"] == [{"model": "llada-quick", "batch": 1, "cache": "prefix", "kernels": "torch", "compile": "none",
                               "error": "RuntimeError: CUDA error: operation not permitted when stream is capturing"}]
    assert "| llada-quick | 1 | prefix | torch | none | FAILED: RuntimeError" in capsys.readouterr().out


def test_bad_input_is_one_error_line(e2e, capsys):
    assert e2e.main(["--quick", "--models", "llada-70b"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown model 'llada-70b'; choose one of: llada-8b, dream-7b, llada-quick, dream-quick"]
    assert e2e.main(["--quick", "--run", "llada-quick:1:dual"]) == 2
    assert "MODEL:BATCHES:CACHES:KERNELS:COMPILE" in capsys.readouterr().err


def test_bandwidth_table_prefers_the_longest_name(e2e):
    # "NVIDIA H100 PCIe" contains both "H100" (SXM, 3350 GB/s) and "H100 PCIe" (2000 GB/s): the PCIe card's figure
    assert e2e.bandwidth_key("NVIDIA H100 PCIe") == "H100 PCIe"
    assert e2e.bandwidth_key("NVIDIA H100 80GB HBM3") == "H100"
    assert e2e.BANDWIDTH_GBS[e2e.bandwidth_key("NVIDIA H200")] == 4800
    assert e2e.bandwidth_key("NVIDIA GH200 480GB") == "GH200"
    assert e2e.bandwidth_key("Some CPU") is None
