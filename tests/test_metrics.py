"""Run summaries, TPF/throughput/speedup helpers, and AUP against hand-computed values."""

import math

import pytest

from dllm.errors import DllmError
from dllm.evals import metrics


def test_tpf_throughput_speedup():
    assert metrics.tokens_per_forward(256, 64) == 4.0
    assert metrics.throughput(100, 4.0) == 25.0
    assert metrics.speedup(54.4, 6.7) == pytest.approx(8.119, abs=1e-3)
    with pytest.raises(DllmError, match="nfe"):
        metrics.tokens_per_forward(10, 0)
    with pytest.raises(DllmError, match="baseline"):
        metrics.speedup(1.0, 0.0)


def test_summary():
    records = [
        {"id": 0, "strict_match": True, "flexible_extract": True, "gen_tokens": 100, "nfe": 50, "latency_s": 2.0},
        {"id": 1, "strict_match": False, "flexible_extract": True, "gen_tokens": 60, "nfe": 10, "latency_s": 1.0},
        {"id": 2, "strict_match": False, "flexible_extract": False, "gen_tokens": 40, "nfe": 20, "latency_s": 1.0},
    ]
    s = metrics.summary(records, score_keys=("strict_match", "flexible_extract"))
    assert s["n"] == 3
    assert s["accuracy"] == {"strict_match": pytest.approx(1 / 3), "flexible_extract": pytest.approx(2 / 3)}
    assert s["total_tokens"] == 200 and s["total_nfe"] == 80
    assert s["mean_nfe"] == pytest.approx(80 / 3)
    assert s["tpf"] == pytest.approx(2.5)  # total tokens / total NFE, not the mean of per-sample ratios
    assert s["tokens_per_s"] == pytest.approx(50.0)
    assert s["mean_latency_s"] == pytest.approx(4 / 3)


def test_summary_missing_fields():
    s = metrics.summary([{"id": 0, "correct": 1.0, "gen_tokens": 10, "latency_s": 1.0}])
    assert s["accuracy"] == {"correct": 1.0}
    assert s["total_nfe"] is None and s["tpf"] is None and s["tokens_per_s"] == 10.0
    with pytest.raises(DllmError, match="'nfe' is missing in 1 of 2"):
        metrics.summary([{"correct": 1, "nfe": 3}, {"correct": 0}])
    with pytest.raises(DllmError, match="score field 'passed'"):
        metrics.summary([{"correct": 1}], score_keys=("passed",))
    with pytest.raises(DllmError, match="empty"):
        metrics.summary([])


def test_aup_reproduces_published_d3llm_value():
    # docs/methods.md#aup worked example: d3LLM-LLaDA GSM8K-CoT, points (1, 74.02) and (9.08, 73.10), y_max 74.98
    # -> AUP 635.717.
    assert metrics.aup([(9.08, 73.10), (1.0, 74.02)], y_max=74.98) == pytest.approx(635.717, abs=1e-3)


def test_aup_hand_computed_three_points():
    # y_max = 80, alpha = 3: W(80) = 1, W(76) = exp(-0.15), W(78) = exp(-0.075).
    points = [(1.0, 80.0), (2.0, 76.0), (4.0, 78.0)]
    w76, w78 = math.exp(-3 * (1 - 76 / 80)), math.exp(-3 * (1 - 78 / 80))
    expected = 1 * 80 + 0.5 * (2 - 1) * (76 * w76 + 80) + 0.5 * (4 - 2) * (78 * w78 + 76 * w76)
    assert metrics.aup(points) == pytest.approx(expected)
    # By hand: 76*W(76) = 65.414, 78*W(78) = 72.364 -> 80 + 0.5*(65.414 + 80) + 1.0*(72.364 + 65.414) = 290.485
    assert metrics.aup(points) == pytest.approx(290.485, abs=1e-3)


def test_aup_without_accuracy_loss_is_plain_area():
    points = [(1.0, 50.0), (3.0, 50.0), (5.0, 50.0)]
    assert metrics.aup(points) == pytest.approx(50 + 2 * 50 + 2 * 50)


def test_aup_drops_points_more_than_five_below_the_first():
    points = [(1.0, 80.0), (2.0, 76.0), (6.0, 74.0)]  # 74 < 80 - 5: left out
    assert metrics.aup(points) == pytest.approx(metrics.aup(points[:2]))
    with pytest.raises(DllmError, match="more than 5.0 below"):
        metrics.aup(points, strict=True)
    # A single point is just tpf * accuracy.
    assert metrics.aup([(2.0, 40.0)]) == 80.0


def test_aup_group_y_max_penalises_lower_accuracy():
    own = metrics.aup([(1.0, 70.0), (4.0, 70.0)])
    group = metrics.aup([(1.0, 70.0), (4.0, 70.0)], y_max=80.0)
    assert group < own == pytest.approx(280.0)


def test_aup_validates_inputs():
    with pytest.raises(DllmError, match="tpf must be positive"):
        metrics.aup([(0.0, 50.0)])
    with pytest.raises(DllmError, match=r"percentage in \[0, 100\]"):
        metrics.aup([(1.0, 150.0)])
    with pytest.raises(DllmError, match="at least one"):
        metrics.aup([])
    with pytest.warns(UserWarning, match="fractions"):
        metrics.aup([(1.0, 0.7), (2.0, 0.69)])
