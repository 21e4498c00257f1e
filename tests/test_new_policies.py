"""Exact behaviour of ``ebsampler``, ``localleap`` and ``klass`` (docs/methods.md#ebsampler, #localleap, #klass):
which positions commit at which step on hand-built distributions of a scripted model, the same decisions
re-derived step by step by small float64 versions of each rule on random logits, batch == single on the shipped
tiny model, and option errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fake_model import MASK, NEG, ScriptedLM, dist, peaked, run_scripted

import dllm
from dllm.errors import DllmError
from dllm.samplers.registry import make_policy

V = 16
PROMPT = [7, 8, 9]


def run(model, policy, prompts=None, **kw):
    return run_scripted(model, policy, prompts or [PROMPT], **kw)


def rows(*cols):
    """[G, V] logits from per-position [V] logits."""
    return torch.stack(list(cols))


def binary_entropy_logits(token: int, entropy: float) -> torch.Tensor:
    """[V] logits of a two-token distribution (``token`` with p >= 1/2, ``token + 1`` with 1 - p, every other
    token 0) whose entropy is ``entropy`` nats, p found by bisection."""
    h = lambda p: -p * math.log(p) - (1 - p) * math.log(1 - p)  # noqa: E731 - decreasing on [1/2, 1)
    lo, hi = 0.5, 1.0 - 1e-15
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if h(mid) > entropy else (lo, mid)
    p = (lo + hi) / 2
    assert abs(h(p) - entropy) < 1e-9
    return dist(V, {token: p, token + 1: 1 - p})


# ---------------------------------------------------------------------------------------------------------
# EB-Sampler


@pytest.mark.parametrize("entropies,gamma,expected", [
    # sorted 0.05, 0.08, 0.5, 0.6: prefix bounds (sum minus max) 0, 0.05, 0.13 -> the two lowest at step 0;
    # then 0.5, 0.6 left: 0, 0.5 -> one per step, lowest entropy first
    ([0.5, 0.05, 0.6, 0.08], 0.1, [1, 0, 2, 0]),
    # the largest term never counts: 0.01 + 0.02 + 0.5 - 0.5 = 0.03 <= 0.1 -> all three at once, although the
    # plain sum is 0.53
    ([0.01, 0.5, 0.02], 0.1, [0, 0, 0]),
    # gamma 0: the second lowest would need the lowest to be exactly 0 -> one per step in entropy order
    ([0.3, 0.05, 0.08], 0.0, [2, 0, 1]),
    # a larger budget: 0.05 + 0.08 + 0.5 = 0.63 <= 0.7 with 0.6 the maximum -> four at once
    ([0.5, 0.05, 0.6, 0.08], 0.7, [0, 0, 0, 0]),
])
def test_eb_commits_the_entropy_bounded_prefix(entropies, gamma, expected):
    model = ScriptedLM.from_steps(V, [rows(*[binary_entropy_logits(5 + 2 * i, e) for i, e in enumerate(entropies)])])
    out, steps = run(model, "ebsampler", gamma=gamma)
    assert steps == [expected] and out.seq_nfe == [max(expected) + 1]
    assert out.tokens.tolist() == [[5 + 2 * i for i in range(len(entropies))]]


def test_eb_entropy_uses_the_temperature():
    # p = 0.9 on two tokens: H = 0.325 at temperature 1. At temperature 0.5 the logits double: p = 0.81 / 0.82,
    # H = 0.0663, so two such positions fit gamma 0.1 together only at temperature 0.5 (bound 0.0663 vs 0.325).
    model = ScriptedLM.from_steps(V, [rows(*[dist(V, {5: 0.9, 6: 0.1})] * 2)])
    _, steps = run(model, "ebsampler", gamma=0.1)
    assert steps == [[0, 1]]
    _, steps = run(model, "ebsampler", gamma=0.1, temperature=0.5)
    assert steps == [[0, 0]]


# ---------------------------------------------------------------------------------------------------------
# LocalLeap

#: confidences of 12 positions (all distinct, so float32 rounding cannot reorder ties): an anchor (0.95) at 2;
#: 0.8-0.82 at distances 2 (pos 0), 4 (pos 6) and 5 (pos 7); 0.7 next to the anchor (below the relaxed 0.75);
#: 0.78 far away (pos 11); 0.5-0.55 elsewhere
LEAP_CONF = [0.8, 0.55, 0.95, 0.7, 0.54, 0.53, 0.81, 0.82, 0.52, 0.51, 0.5, 0.78]


def _leap_model():
    return ScriptedLM.from_steps(V, [rows(*[peaked(V, 4 + i, c) for i, c in enumerate(LEAP_CONF)])])


@pytest.mark.parametrize("radius,expected", [
    # step 0: anchor 2, and the 0.8s within 4 of it (0 and 6; 7 is 5 away); later steps have no anchor left, so
    # the plain threshold rule commits one per step by confidence: 7 (0.82), 11 (0.78), 3 (0.7), then the rest
    (4, [0, 4, 0, 3, 5, 6, 0, 1, 7, 8, 9, 2]),
    (5, [0, 3, 0, 2, 4, 5, 0, 0, 6, 7, 8, 1]),  # radius 5 reaches 7 too
    # radius 1: only 1 (0.55) and 3 (0.7 < 0.75) are adjacent -> the threshold rule, one per step after the
    # anchor: 7, 6, 0 (0.82, 0.81, 0.8), 11, 3, then the rest
    (1, [3, 6, 0, 5, 7, 8, 2, 1, 9, 10, 11, 4]),
])
def test_localleap_anchor_relaxes_its_neighbourhood(radius, expected):
    out, steps = run(_leap_model(), "localleap", radius=radius)
    assert steps == [expected] and out.seq_nfe == [max(expected) + 1]
    # the threshold policy at the same threshold commits only the anchor at step 0
    _, base = run(_leap_model(), "threshold")
    assert [i for i, s in enumerate(base[0]) if s == 0] == [2]


def test_localleap_relaxed_threshold_and_no_anchor():
    # relaxed 0.85: the 0.8s near the anchor no longer qualify -> the threshold rule
    _, steps = run(_leap_model(), "localleap", relaxed_threshold=0.85)
    _, base = run(_leap_model(), "threshold")
    assert steps == base
    # relaxed 0.7: 3 (0.7, adjacent) joins 0 and 6 at step 0
    _, steps = run(_leap_model(), "localleap", relaxed_threshold=0.7)
    assert [i for i, s in enumerate(steps[0]) if s == 0] == [0, 2, 3, 6]
    # threshold 0.96: 2 is no anchor any more, nothing is relaxed
    _, steps = run(_leap_model(), "localleap", threshold=0.96)
    assert [i for i, s in enumerate(steps[0]) if s == 0] == [2]


# ---------------------------------------------------------------------------------------------------------
# KLASS


def _alternating(token: int, prob: float, call: int) -> torch.Tensor:
    """A confident prediction that flips between two tokens every call: KL ~ 7 nats, never stable."""
    return peaked(V, token + call % 2, prob)


def _klass_model(calls: int = 8):
    """Positions [p0, p1, d1, d2, d3, low, p0b]: p0 (0.95) and p0b (0.93) never change; p1 (0.95) changes its
    token at call 1 and then stays (0.96); d1-d3 are confident (0.99, 0.98, 0.97) but flip every call; low
    (0.3) never changes."""
    steps = []
    for c in range(calls):
        p1 = peaked(V, 6, 0.95) if c < 1 else peaked(V, 7, 0.96)
        steps.append(rows(peaked(V, 5, 0.95), p1, _alternating(10, 0.99, c), _alternating(12, 0.98, c),
                          _alternating(14, 0.97, c), peaked(V, 8, 0.3), peaked(V, 9, 0.93)))
    return ScriptedLM.from_steps(V, steps)


@pytest.mark.parametrize("history,expected", [
    # H = 2 (quota 1 per step when nothing is ready): steps 0 and 1 nothing is stable (a first KL is infinite,
    # p1's KL at call 1 is ~7) -> the quota takes d1, d2; step 2 p0 and p0b have two KLs of 0 -> both commit, the
    # quota (d3) does not; step 3 p1's KLs are [0, 0] -> p1; step 4 the quota takes d3; step 5 low is stable but
    # 0.3 <= 0.9 -> the quota
    (2, [2, 3, 0, 1, 4, 5, 2]),
    # H = 1: p0/p0b ready at step 1, p1 at step 2 (one KL of 0 after its change); then d2, d3, low
    (1, [1, 2, 0, 3, 4, 5, 1]),
    # H = 3: nothing ready before step 3 (quota d1, d2, d3); p0/p0b at step 3, p1 at step 4
    (3, [3, 4, 0, 1, 2, 5, 3]),
])
def test_klass_commits_after_h_stable_steps(history, expected):
    out, steps = run(_klass_model(), "klass", kl_history=history, steps=7)
    assert steps == [expected] and out.seq_nfe == [max(expected) + 1]


def test_klass_kl_threshold():
    """a alternates p(5) 0.95 <-> 0.94 (rest on 6): KL 0.000937 / 0.000992 nats; b alternates p(7) 0.95 <-> 0.91:
    KL(0.91 || 0.95) = 0.91 ln(0.91/0.95) + 0.09 ln(0.09/0.05) = 0.013755 and 0.011477 the other way."""
    steps_ = []
    for c in range(6):
        a = dist(V, {5: 0.95, 6: 0.05} if c % 2 == 0 else {5: 0.94, 6: 0.06})
        b = dist(V, {7: 0.95, 8: 0.05} if c % 2 == 0 else {7: 0.91, 8: 0.09})
        steps_.append(rows(a, b, _alternating(10, 0.99, c), _alternating(12, 0.98, c)))
    model = ScriptedLM.from_steps(V, steps_)
    # quota 1 per step: d1, d2 first; step 2 a is stable (both KLs < 0.01) and ready alone; b only by the quota
    _, steps = run(model, "klass", steps=4)
    assert steps == [[2, 3, 0, 1]]
    _, steps = run(model, "klass", steps=4, kl_threshold=0.02)  # b's KLs are below 0.02: both at step 2
    assert steps == [[2, 2, 0, 1]]


def test_klass_kl_direction():
    """KL(p_t || p_{t-1}), not the reverse: a moves from A = (0.95, 0.05) to B = (0.99, 0.01) at call 1, and
    KL(B || A) = 0.99 ln(0.99/0.95) + 0.01 ln(0.01/0.05) = 0.0247 < 0.03 < KL(A || B) = 0.0413."""
    steps_ = [rows(dist(V, {5: 0.95, 6: 0.05} if c == 0 else {5: 0.99, 6: 0.01}), _alternating(10, 0.999, c),
                   _alternating(12, 0.998, c)) for c in range(4)]
    model = ScriptedLM.from_steps(V, steps_)
    # step 0 the quota takes d1; step 1 a's one KL (0.0247) is below 0.03 and 0.99 > 0.9: ready; then d2
    _, steps = run(model, "klass", steps=3, kl_history=1, kl_threshold=0.03)
    assert steps == [[1, 0, 2]]
    _, steps = run(model, "klass", steps=3, kl_history=1, kl_threshold=0.02)  # not stable: the quota takes d2
    assert steps == [[2, 0, 1]]


def test_klass_fallback_quota():
    # nothing ever stable: LLaDA's quota, 2 per step with 2 steps for 4 positions, most confident first
    steps_ = [rows(_alternating(5, 0.99, c), _alternating(7, 0.6, c), _alternating(9, 0.98, c),
                   _alternating(11, 0.7, c)) for c in range(4)]
    out, steps = run(ScriptedLM.from_steps(V, steps_), "klass", steps=2)
    assert steps == [[0, 1, 0, 1]] and out.seq_nfe == [2]
    # a ready step commits fewer than the quota: the block outlives its budget (S_b = 3) by one step, with at
    # least one commit per step (the reference would stop after S_b iterations with a mask left)
    steps_ = [rows(peaked(V, 5, 0.93), *[_alternating(6 + 2 * i, 0.99 - 0.01 * i, c) for i in range(4)],
                   _alternating(14, 0.5, c)) for c in range(6)]
    out, steps = run(ScriptedLM.from_steps(V, steps_), "klass", steps=3)
    # quota [2, 2, 2]: d1 d2, d3 d4, then position 0 ready alone (step 2), then the last position (step 3)
    assert steps == [[2, 0, 0, 1, 1, 3]] and out.seq_nfe == [4]


def test_klass_history_is_per_block():
    # every position has the same constant distribution (p 0.95). Blocks of 3, quota 1 per step. Within a block
    # the first KL is infinite: steps 0 and 1 take the quota, step 2 the last position is ready. The next block
    # starts without history (its positions were outside the window), so the same again; a history carried
    # over from block 1 (same offsets, same distribution, KL 0) would make positions 4 and 5 ready at step 1.
    model = ScriptedLM.from_steps(V, [rows(*[peaked(V, 5, 0.95)] * 6)])
    out, steps = run(model, "klass", block_length=3, steps=6)
    assert steps == [[0, 1, 2, 3, 4, 5]] and out.seq_nfe == [6]
    # with kl_history=1 the second step of each block finds both remaining positions ready
    out, steps = run(model, "klass", block_length=3, steps=6, kl_history=1)
    assert steps == [[0, 1, 1, 2, 3, 3]] and out.seq_nfe == [4]


# ---------------------------------------------------------------------------------------------------------
# Independent float64 re-derivations on random logits


G, BLOCK, STEPS = 12, 4, 12
PROMPTS = [[5, 6, 7, 8, 9], [10], [11, 12, 13]]


class Recorder:
    """A random 'model' whose logits per (prompt, call) are kept for the re-derivation. Per position a fixed
    random base with its own sharpness, plus per-call noise whose scale is 0 or 0.005 (positions that settle:
    KLASS finds them stable) or 1.5 (positions that keep moving)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.seen: dict[tuple, torch.Tensor] = {}

    def __call__(self, prompt: tuple, call: int, gen: torch.Tensor) -> torch.Tensor:
        base_gen = torch.Generator().manual_seed(hash((self.seed, prompt)) & 0x7FFFFFFF)
        sharp = torch.rand(G, 1, generator=base_gen) * 9 + 1
        base = torch.randn(G, V, generator=base_gen) * sharp
        scale = torch.tensor([0.0, 0.005, 1.5])[torch.randint(0, 3, (G,), generator=base_gen)]
        noise_gen = torch.Generator().manual_seed(hash((self.seed, prompt, call)) & 0x7FFFFFFF)
        logits = base + scale[:, None] * torch.randn(G, V, generator=noise_gen)
        logits[:, MASK] = NEG
        self.seen[(prompt, call)] = logits.clone()
        return logits


def _replay(policy, seed, **opts):
    """Run ``policy`` on a ragged batch; yield per trace step and active row: the row's logits [G, V] (float64
    numpy), its candidates and commits as generation positions, and the block/step facts of the row."""
    rec = Recorder(seed)
    model = ScriptedLM(V, G, rec)
    out = dllm.generate(model, PROMPTS, policy=policy, gen_length=G, block_length=BLOCK, steps=STEPS, trace=True,
                        stop_at_eos=False, **opts)
    gs = out.trace.gen_start
    calls = [0] * len(PROMPTS)
    for s in out.trace.steps:
        for b, prompt in enumerate(PROMPTS):
            if not s.active[b]:
                continue
            logits = rec.seen[(tuple(prompt), calls[b])].double().numpy()
            calls[b] += 1
            off = s.window_start - gs
            cand = [off + j for j in s.candidates[b].nonzero().flatten().tolist()]
            got = [off + j for j in s.committed[b].nonzero().flatten().tolist()]
            yield b, int(s.block_start[b]) - gs, logits, cand, got
    assert all(c > 0 for c in calls)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _top1(probs: np.ndarray, cand: list[int]) -> int:
    return min(cand, key=lambda i: (-probs[i].max(), i))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_eb_rederived(seed, temperature):
    gamma = 0.4
    multi = single = 0
    for _, _, logits, cand, got in _replay("ebsampler", seed, gamma=gamma, temperature=temperature):
        p = _softmax(logits / temperature if temperature > 0 else logits)
        ent = {i: float(-(p[i] * np.log(np.where(p[i] > 0, p[i], 1.0))).sum()) for i in cand}
        order = sorted(cand, key=lambda i: (ent[i], i))
        k = 1
        while k < len(order) and sum(ent[i] for i in order[:k + 1]) - max(ent[i] for i in order[:k + 1]) <= gamma:
            k += 1
        assert got == sorted(order[:k])
        multi += k > 1
        single += k == 1 and len(cand) > 1
    assert multi and single  # both outcomes of the bound occur


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_localleap_rederived(seed):
    tau, relaxed, radius = 0.9, 0.6, 2
    relaxed_commits = far_misses = 0
    for _, _, logits, cand, got in _replay("localleap", seed, threshold=tau, relaxed_threshold=relaxed, radius=radius):
        conf = {i: float(_softmax(logits[i]).max()) for i in cand}
        anchors = [i for i in cand if conf[i] >= tau]
        want = set(anchors) | {_top1(_softmax(logits), cand)}
        for i in cand:
            near = any(abs(i - a) <= radius for a in anchors)
            if near and conf[i] >= relaxed and i not in want:
                want.add(i)
                relaxed_commits += 1
            elif not near and relaxed <= conf[i] < tau:
                far_misses += 1
        assert got == sorted(want)
    assert relaxed_commits and far_misses  # the neighbourhood decides somewhere, both ways


def _quota(m: int, steps: int, i: int) -> int:
    return 0 if i >= steps else m // steps + (i < m % steps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_klass_rederived(seed):
    conf_t, kl_t, h = 0.6, 0.01, 2
    s_b = STEPS * BLOCK // G
    hist: dict[int, dict] = {}
    ready_steps = quota_steps = 0
    for b, start, logits, cand, got in _replay("klass", seed, conf_threshold=conf_t, kl_threshold=kl_t, kl_history=h):
        row = hist.setdefault(b, {"start": None})
        if row["start"] != start:  # the row opened a block: no history, step 0, m masks
            row.update(start=start, step=0, m=len(cand), logp={}, kls={})
        logp = logits - logits.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        ready = []
        for i in cand:
            prev = row["logp"].get(i)
            kl = float((np.exp(logp[i]) * (logp[i] - prev)).sum()) if prev is not None else math.inf
            row["logp"][i] = logp[i]
            row["kls"][i] = (row["kls"].get(i, []) + [kl])[-h:]
            stable = len(row["kls"][i]) == h and all(x < kl_t for x in row["kls"][i])
            if stable and math.exp(logp[i].max()) > conf_t:
                ready.append(i)
        if ready:
            want = ready
            ready_steps += 1
        else:
            q = max(1, _quota(row["m"], s_b, row["step"]))
            want = sorted(sorted(cand, key=lambda i: (-logp[i].max(), i))[:q])
            quota_steps += 1
        assert got == want, (b, row["step"])
        row["step"] += 1
    assert ready_steps and quota_steps


# ---------------------------------------------------------------------------------------------------------
# The shipped tiny model: batch == single


@pytest.mark.parametrize("policy", ["ebsampler", "localleap", "klass"])
@pytest.mark.parametrize("block_length", [4, 8])
def test_batch_equals_single_on_tiny(tiny, policy, block_length):
    texts = ["sort:8315=", "shuffle:6zrgm="]
    kw = dict(policy=policy, gen_length=16, block_length=block_length, stop_at_eos=False, trace=True)
    batch = dllm.generate(tiny, texts, **kw)
    for i, text in enumerate(texts):
        one = dllm.generate(tiny, [text], **kw)
        assert batch.tokens[i].tolist() == one.tokens[0].tolist()
        assert batch.seq_nfe[i] == one.seq_nfe[0]
        assert batch.trace.commit_step()[i].tolist() == one.trace.commit_step()[0].tolist()
    assert min(batch.seq_nfe) < 16  # the rule commits several tokens per forward here, not one by one


# ---------------------------------------------------------------------------------------------------------
# Options


def test_reference_defaults():
    assert make_policy("ebsampler").options == {"gamma": 0.1, "temperature": 0.0}
    assert make_policy("localleap").options == {"threshold": 0.9, "relaxed_threshold": 0.75, "radius": 4,
                                                "temperature": 0.0}
    assert make_policy("klass").options == {"conf_threshold": 0.9, "kl_threshold": 0.01, "kl_history": 2,
                                            "temperature": 0.0}


@pytest.mark.parametrize("name,opts,match", [
    ("ebsampler", dict(gamma=-0.1), r"gamma -0.1 is outside >= 0"),
    ("ebsampler", dict(gamma="much"), "gamma must be a number"),
    ("localleap", dict(radius=-1), r"radius -1 is outside >= 0"),
    ("localleap", dict(radius=1.5), "radius must be an integer"),
    ("localleap", dict(relaxed_threshold=0), r"relaxed_threshold 0 is outside \(0, 1\]"),
    ("localleap", dict(threshold=1.5), r"threshold 1.5 is outside \(0, 1\]"),
    ("localleap", dict(radus=2), "unknown option 'radus'"),
    ("klass", dict(kl_threshold=0), r"kl_threshold 0 is outside > 0"),
    ("klass", dict(conf_threshold=1.2), r"conf_threshold 1.2 is outside \[0, 1\]"),
    ("klass", dict(kl_history=0), r"kl_history 0 is outside >= 1"),
    ("klass", dict(kl_history=1.5), "kl_history must be an integer"),
])
def test_option_errors_are_one_line(name, opts, match):
    with pytest.raises(DllmError, match=match) as err:
        make_policy(name, **opts)
    assert "\n" not in str(err.value)
