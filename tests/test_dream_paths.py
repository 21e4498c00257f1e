"""Fast-dLLM's Dream decoding paths and bfloat16 scoring as named options (docs/methods.md#fast-dllm, #dream):
``threshold cap=quota`` (the Dream sampler's confidence_threshold), ``first_commit`` (the Dream block/cache
sampler's forced first position, with entropy scoring on the Dream policies) and ``score_dtype=bfloat16``.
Scripted distributions pin each rule with hand-worked expectations; batch == single on the shipped tiny models;
one-line option errors."""

from __future__ import annotations

import random

import pytest
import torch
from fake_model import NEG, ScriptedLM, content_script, dist, gap, peaked, run_scripted

import dllm
from dllm.errors import DllmError
from dllm.models.base import SpecialTokens
from dllm.samplers.base import PolicyState, Proposal, StepContext
from dllm.samplers.policies.fastdllm import QuotaCappedThresholdSelector
from dllm.samplers.registry import make_policy
from dllm.samplers.scoring import score_threshold

V = 16
PROMPT = [7, 8, 9]


def run(model, policy, prompts=None, **kw):
    out, steps = run_scripted(model, policy, prompts or [PROMPT], **kw)
    return out, steps[0]


def scripted(*calls):
    """A model whose k-th forward returns ``calls[k]`` (the last repeats); each call is a list of [V] logits."""
    return ScriptedLM.from_steps(V, [torch.stack(list(c)) for c in calls])


def tok(j):
    """The token scripted for generated position j (ordinary ids start at 5)."""
    return 5 + j


# ---------------------------------------------------------------------------------------------------------
# cap=quota: Fast-dLLM's Dream confidence_threshold


def test_quota_cap_carries_rejected_picks_to_the_next_step():
    # G = 8, S = 4 -> quota q = 2 a step. Call 0: position 0 at 0.99, the rest at 0.5; later calls: positions
    # 1..7 at 0.99, 0.98, ..., 0.93 (all above 0.9).
    # step 0: cap 2 -> pick 0 (0.99) and one 0.5 (rejected, carried): commits {0}
    # step 1: cap q + 1 = 3 -> 1, 2, 3;  step 2: cap 2 -> 4, 5;  step 3: cap 2 -> 6, 7.  NFE 4.
    first = [peaked(V, tok(0), 0.99)] + [peaked(V, tok(j), 0.5) for j in range(1, 8)]
    later = [peaked(V, tok(0), 0.99)] + [peaked(V, tok(j), 1.0 - j / 100) for j in range(1, 8)]
    model = scripted(first, later)
    out, steps = run(model, "threshold", cap="quota", steps=4)
    assert steps == [0, 1, 1, 1, 2, 2, 3, 3] and out.seq_nfe == [4]
    assert out.tokens[0].tolist() == [tok(j) for j in range(8)]
    # the uncapped rule (the default) commits every position above 0.9 at once
    out, steps = run(model, "threshold", steps=4)
    assert steps == [0, 1, 1, 1, 1, 1, 1, 1] and out.seq_nfe == [2]


def test_quota_cap_lifts_after_the_last_scheduled_step():
    # G = 6, S = 2 -> q = 3. Call 0: 0.99 at position 0, 0.5 elsewhere -> commits {0} (two picks carried).
    # Call 1: all 0.5 -> step 1 (last scheduled) cap 6 - 1 = 5 but only the top one passes: commits {1}.
    # Call 2: everything left at 0.95 -> step 2 cap = all 4 remaining (not q = 3): commits {2, 3, 4, 5}.
    c0 = [peaked(V, tok(0), 0.99)] + [peaked(V, tok(j), 0.5) for j in range(1, 6)]
    c1 = [peaked(V, tok(j), 0.5) for j in range(6)]
    c2 = [peaked(V, tok(j), 0.95) for j in range(6)]
    out, steps = run(scripted(c0, c1, c2), "threshold", cap="quota", steps=2)
    assert steps == [0, 1, 2, 2, 2, 2] and out.seq_nfe == [3]


def _reference_capped(conf_steps, m, s, tau):
    """The Dream sampler's confidence_threshold loop, written from its description (docs/methods.md#fast-dllm):
    quota q = m // s, a carry of rejected picks, the quota dropped to 0 after the last scheduled step. Returns
    the commit sets per step (positions, ties to the lower index)."""
    q, carry, i, steps, done, out = m // s, 0, 0, s, set(), []
    while len(done) < m:
        conf = conf_steps[i]
        cap = q + carry
        carry = 0
        order = sorted((p for p in range(m) if p not in done), key=lambda p: (-conf[p], p))[:cap]
        take = {order[0]}
        for p in order[1:]:
            if conf[p] >= tau:
                take.add(p)
            else:
                carry += 1
                if i >= steps - 1:
                    q = 0
        carry += cap - len(order)  # picks beyond the masked positions are rejected too (never happens)
        done |= take
        out.append(take)
        i += 1
    return out


@pytest.mark.parametrize("m,s", [(8, 4), (12, 3), (16, 2), (6, 6)])
def test_quota_cap_equals_the_carry_loop(m, s):
    rng = random.Random(m * 100 + s)
    special = SpecialTokens(mask=3, eos=2, pad=0)
    for trial in range(40):
        tau = rng.choice([0.5, 0.7, 0.9])
        conf_steps = [[rng.random() for _ in range(m)] for _ in range(4 * m)]
        want = _reference_capped(conf_steps, m, s, tau)
        sel = QuotaCappedThresholdSelector(tau)
        cand = torch.ones(1, m, dtype=torch.bool)
        got = []
        for i in range(len(want)):
            conf = torch.tensor([conf_steps[i]], dtype=torch.float32).masked_fill(~cand, float("-inf"))
            z = torch.zeros(1, dtype=torch.long)
            ctx = StepContext(logits=torch.zeros(1, m, 4), tokens=torch.full((1, m), 3), candidates=cand,
                              undecided=cand.clone(), window_start=0, gen_start=0, gen_length=m, block_start=z,
                              block_end=z + m, step=z + i, block_steps=z + s, block_mask_count=z + m, decoded=z,
                              active=torch.ones(1, dtype=torch.bool), generators=[torch.Generator()], special=special)
            commit = sel(Proposal(tokens=torch.zeros(1, m, dtype=torch.long), confidence=conf), ctx,
                         PolicyState(1, torch.device("cpu")))
            got.append(set(commit[0].nonzero().squeeze(1).tolist()))
            cand = cand & ~commit
        assert got == want, (trial, tau)


# ---------------------------------------------------------------------------------------------------------
# first_commit: the Dream block/cache sampler


def test_first_commit_opens_each_block_with_its_first_position():
    # G = 4 in blocks of 2; position 0 at 0.3, positions 1..3 at 0.99 (every call).
    # first_commit: block [0,2) step 0 commits only 0 (although 1 is at 0.99), step 1 commits 1; block [2,4)
    # step 0 commits only 2 (3 is at 0.99 too), step 1 commits 3 -> steps 0, 1, 2, 3; NFE 4.
    # default threshold: block 0 commits 1 first (0.3 fails), then 0; block 1 commits both at once -> NFE 3.
    model = scripted([peaked(V, tok(0), 0.3)] + [peaked(V, tok(j), 0.99) for j in range(1, 4)])
    out, steps = run(model, "threshold", first_commit=True, block_length=2)
    assert steps == [0, 1, 2, 3] and out.seq_nfe == [4] and out.tokens[0].tolist() == [5, 6, 7, 8]
    out, steps = run(model, "threshold", block_length=2)
    assert steps == [1, 0, 2, 2] and out.seq_nfe == [3]


def test_entropy_first_commit_keeps_dream_schedule_after_the_first_step():
    # G = 8, one block, S = 4: t = linspace(1, 0.001, 5) = 1, 0.75025, 0.5005, 0.25075, 0.001.
    # Position 0 at 0.3 (highest entropy), positions 1..7 at 0.99, 0.98, ..., 0.93 (entropy rises as p falls).
    # plain entropy: step 0 k = int(8 * 0.24975) = 1 -> {1}; step 1 k = int(7 * (1 - 0.5005/0.75025)) = int(2.33)
    #   = 2 -> {2, 3}; step 2 k = int(5 * (1 - 0.25075/0.5005)) = int(2.495) = 2 -> {4, 5}; step 3 rest {0, 6, 7}.
    # first_commit: step 0 {0}; step 1 (n = 7) {1, 2}; step 2 (n = 5) {3, 4}; step 3 {5, 6, 7}. NFE 4 both.
    model = scripted([peaked(V, tok(0), 0.3)] + [peaked(V, tok(j), 1.0 - j / 100) for j in range(1, 8)])
    out, steps = run(model, "entropy", steps=4)
    assert steps == [3, 0, 1, 1, 2, 2, 3, 3] and out.seq_nfe == [4]
    out, steps = run(model, "entropy", first_commit=True, steps=4)
    assert steps == [0, 1, 1, 2, 2, 3, 3, 3] and out.seq_nfe == [4]


def test_first_commit_block_path_scores_by_entropy():
    # G = 4, one block, S = 3: t = 1, 0.667, 0.334, 0.001; step 0 commits position 0, step 1 k = int(3 * (1 -
    # 0.334/0.667)) = int(1.497) = 1, step 2 the rest.
    # position 1: p = 0.6 on its token, 0.4 spread over the other 15 -> top-1 0.6, entropy 0.6 ln(1/0.6) +
    #   0.4 ln(15/0.4) = 0.306 + 1.450 = 1.756;
    # position 2: 0.55 / 0.45 on two tokens -> top-1 0.55, entropy 0.329 + 0.359 = 0.688 (more certain);
    # positions 0 and 3: p = 0.3 (entropy 2.51).
    # entropy picks position 2 at step 1, maskgit_plus (top-1 probability) position 1.
    model = scripted([peaked(V, tok(0), 0.3), peaked(V, tok(1), 0.6), dist(V, {tok(2): 0.55, 4: 0.45}),
                      peaked(V, tok(3), 0.3)])
    out, steps = run(model, "entropy", first_commit=True, steps=3)
    assert steps == [0, 2, 1, 2] and out.seq_nfe == [3]
    out, steps = run(model, "maskgit_plus", first_commit=True, steps=3)
    assert steps == [0, 1, 2, 2] and out.seq_nfe == [3]


# ---------------------------------------------------------------------------------------------------------
# score_dtype=bfloat16


def test_bf16_threshold_comparison_commits_a_near_tie():
    # position 0: logit 4.875 (exact in bf16) on its token, 0 on the 15 others: p = e^4.875 / (e^4.875 + 15)
    #   = 130.974 / 145.974 = 0.89724 < 0.9: float32 rejects it. bf16 rounds p to the nearest multiple of 2^-8,
    #   0.8984375 (230/256), and compares it with bf16(0.9) = 0.8984375: accepted, as in the Dream reference.
    # position 1 at 0.99 (the forced top pick in both); position 2 at 0.5.
    model = scripted([gap(V, tok(0), 4.875), peaked(V, tok(1), 0.99), peaked(V, tok(2), 0.5)])
    out, steps = run(model, "threshold")
    assert steps == [1, 0, 2] and out.seq_nfe == [3]
    out, steps = run(model, "threshold", score_dtype="bfloat16")
    assert steps == [0, 0, 1] and out.seq_nfe == [2]
    assert out.trace.steps[0].confidence[0, :3].tolist() == [0.8984375, pytest.approx(0.98828125), 0.5]
    assert score_threshold(0.9, "bfloat16") == 0.8984375 and score_threshold(0.9, "float32") == 0.9


def test_bf16_rounding_ties_go_to_the_lower_position():
    # maskgit_plus, G = 3, S = 2: step 0 commits int(3 * 0.4995) = 1 position.
    # position 1: logit 4.875 on its token, 0 elsewhere -> p = 0.897244;
    # position 0: the same plus one other token at 2^-7 -> p = 130.974 / (130.974 + 14 + e^0.0078125) = 0.897196.
    # float32 ranks position 1 first; bf16 rounds both to 0.8984375 and the tie goes to position 0.
    p0 = gap(V, tok(0), 4.875)
    p0[12] = 2.0 ** -7
    model = scripted([p0, gap(V, tok(1), 4.875), peaked(V, tok(2), 0.5)])
    out, steps = run(model, "maskgit_plus", steps=2)
    assert steps == [1, 0, 1]
    out, steps = run(model, "maskgit_plus", steps=2, score_dtype="bfloat16")
    assert steps == [0, 1, 1]


def test_bf16_token_is_the_first_argmax_of_the_rounded_probabilities():
    # Two tokens with logits 0 (token 5) and 2^-9 (token 6), the rest -1e4: p = 0.499512 and 0.500488.
    # float32 takes token 6. In bf16 both round to 0.5 (0.499512 is 255.75 steps of 2^-9, 0.500488 is 128.125
    # steps of 2^-8), so Dream's probs.max takes the first: token 5.
    row = torch.full((V,), NEG)
    row[5], row[6] = 0.0, 2.0 ** -9
    model = scripted([row])
    for policy in ("threshold", "maskgit_plus", "entropy"):
        out, _ = run(model, policy, steps=1)
        assert out.tokens[0].tolist() == [6], policy
        out, _ = run(model, policy, steps=1, score_dtype="bfloat16")
        assert out.tokens[0].tolist() == [5], policy


@pytest.mark.parametrize("policy,opts", [("threshold", {}), ("threshold", {"cap": "quota", "steps": 4}),
                                         ("maskgit_plus", {"steps": 4}), ("topk_margin", {"steps": 4}),
                                         ("entropy", {"steps": 4})])
def test_bf16_equals_float32_on_clear_cases(policy, opts):
    # confidences far from the threshold and from each other (0.99, 0.95, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1): rounding
    # to bf16 moves none of them across 0.9 or past another, so the same positions commit at the same steps.
    probs = [0.99, 0.95, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1]
    model = scripted([peaked(V, tok(j), p) for j, p in enumerate(probs)])
    out32, steps32 = run(model, policy, **opts)
    out16, steps16 = run(model, policy, score_dtype="bfloat16", **opts)
    assert steps16 == steps32 and out16.tokens.tolist() == out32.tokens.tolist()
    assert len(set(steps32)) < 8 or policy != "threshold"  # several tokens a step: the comparison has power


def test_bf16_dream_confidences_are_dreams_bf16_arithmetic():
    # the confidences of each Dream algorithm equal Dream's sample_tokens run on bf16 logits
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(0)) * 3
    model = scripted(list(logits))
    probs = torch.softmax(logits.bfloat16(), -1)
    want = {"maskgit_plus": probs.max(-1).values,
            "topk_margin": probs.topk(2, -1).values[:, 0] - probs.topk(2, -1).values[:, 1],
            "entropy": (probs * torch.log(probs + 1e-10)).sum(-1)}
    for policy, conf in want.items():
        out, _ = run(model, policy, steps=6, score_dtype="bfloat16")
        got = out.trace.steps[0].confidence[0, :6]
        assert got.tolist() == conf.float().tolist(), policy
        out32, _ = run(model, policy, steps=6)
        assert out32.trace.steps[0].confidence[0, :6].tolist() != got.tolist(), policy


# ---------------------------------------------------------------------------------------------------------
# defaults, batch == single, errors


def test_defaults_are_the_previous_behaviour():
    assert make_policy("threshold").options == {"threshold": 0.9, "temperature": 0.0, "cap": "off",
                                                "first_commit": False, "score_dtype": "float32"}
    for name in ("maskgit_plus", "topk_margin", "entropy"):
        assert make_policy(name).options == {"temperature": 0.0, "eps": 1e-3, "first_commit": False,
                                             "score_dtype": "float32"}


CONFIGS = [
    ("threshold", {"cap": "quota", "steps": 4}),
    ("threshold", {"cap": "quota", "steps": 4, "first_commit": True, "score_dtype": "bfloat16"}),
    ("threshold", {"first_commit": True, "cache": "prefix"}),
    ("threshold", {"score_dtype": "bfloat16", "temperature": 0.7}),
    ("entropy", {"first_commit": True, "steps": 8, "cache": "prefix", "block_length": 8}),
    ("entropy", {"first_commit": True, "score_dtype": "bfloat16", "steps": 8, "cache": "dual", "block_length": 8}),
    ("topk_margin", {"score_dtype": "bfloat16", "steps": 8}),
]


@pytest.fixture(scope="module", params=["tiny-dream", "tiny-llada"])
def tiny(request):
    return dllm.load_model(request.param, device="cpu")


@pytest.mark.parametrize("policy,opts", CONFIGS)
def test_ragged_batch_equals_single_on_tiny_models(tiny, policy, opts):
    texts = ["sort:8315=", "rev:ab=", "shuffle:6zrgm="]
    kw = dict(gen_length=16, block_length=16, stop_at_eos=False, trace=True, seed=3)
    kw.update(opts)
    batch = dllm.generate(tiny, texts, policy=policy, **kw)
    for i, text in enumerate(texts):
        one = dllm.generate(tiny, [text], policy=policy, **kw)
        assert batch.tokens[i].tolist() == one.tokens[0].tolist()
        assert batch.seq_nfe[i] == one.seq_nfe[0]
        assert batch.trace.commit_step()[i].tolist() == one.trace.commit_step()[0].tolist()


def test_scripted_ragged_batch_equals_single():
    model = ScriptedLM(V, 8, content_script(V, seed=5, eos_after=6))
    prompts = [[5, 6, 7, 8, 9], [10], [11, 12, 13]]
    for policy, opts in [("threshold", dict(cap="quota", steps=2, first_commit=True)),
                         ("entropy", dict(first_commit=True, score_dtype="bfloat16", steps=4, block_length=4))]:
        batch, _ = run(model, policy, prompts=prompts, **opts)
        for i, p in enumerate(prompts):
            single, _ = run(model, policy, prompts=[p], **opts)
            assert batch.tokens[i].tolist() == single.tokens[0].tolist()
            assert batch.seq_nfe[i] == single.seq_nfe[0]


@pytest.mark.parametrize("name,opts,match", [
    ("threshold", dict(cap="block"), r"cap 'block' is not allowed; choose one of: off, quota"),
    ("threshold", dict(score_dtype="float16"), r"score_dtype 'float16' is not allowed; choose one of: float32, "
                                               r"bfloat16"),
    ("threshold", dict(first_commit="maybe"), r"first_commit must be true or false"),
    ("entropy", dict(score_dtype="bf16"), r"score_dtype 'bf16' is not allowed"),
    ("entropy", dict(cap="quota"), r"unknown option 'cap' for policy 'entropy'"),
    ("maskgit_plus", dict(first_commit=2), r"first_commit must be true or false"),
    ("factor", dict(score_dtype="bfloat16"), r"unknown option 'score_dtype' for policy 'factor'"),
])
def test_option_errors_are_one_line(name, opts, match):
    with pytest.raises(DllmError, match=match) as err:
        make_policy(name, **opts)
    assert "\n" not in str(err.value)
