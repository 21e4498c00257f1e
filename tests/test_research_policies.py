"""Exact behaviour of the research plug-ins (CreditDecoding, Prophet early commit, AdaBlock, Learn2PD filter,
EoTP) on a scripted fake model: which positions commit at which step, state resets, composition order,
batch == single, option validation."""

from __future__ import annotations

import pytest
import torch
from fake_model import EOS, MASK, ScriptedLM, content_script, dist, gap, peaked

import dllm
from dllm.errors import DllmError
from dllm.models.base import SpecialTokens
from dllm.samplers.base import PolicyState, StepContext
from dllm.samplers.credit import CreditProcessor
from dllm.samplers.eotp import EndOfTextPrediction
from dllm.samplers.learned import DEFAULT_THRESHOLD, FilterMLP, load_filter, save_filter
from dllm.samplers.oracle import oracle_nfe, oracle_policy
from dllm.samplers.prophet import EarlyCommit, prophet_threshold, should_exit
from dllm.samplers.registry import make_policy, policy_options
from dllm.samplers.schedules.adaptive import AdaptiveBlocks
from dllm.training.filter import THRESHOLD_GRID, collect_filter_data, trace_examples, train_filter

V = 16
NL = 9  # the "newline" delimiter of the scripted tests
Q = {5: 0.6, 6: 0.3, 7: 0.1}  # the credit worked example's distribution (docs/methods.md#creditdecoding)
PROMPT = [7, 8, 9]


def run(model, policy, prompts=None, **kw):
    model.reset()
    kw.setdefault("gen_length", model.gen_length)
    out = dllm.generate(model, prompts or [PROMPT], policy=policy, trace=True, **kw)
    return out, out.trace.commit_step()


def rows(*cols):
    """[G, V] logits from per-position [V] logits."""
    return torch.stack(list(cols))


# ---------------------------------------------------------------------------------------------------------
# CreditDecoding


def _ctx(logits, candidates, block_start=0, block_end=None):
    b, w, _ = logits.shape
    block_end = w if block_end is None else block_end
    z = torch.zeros(b, dtype=torch.long)
    return StepContext(
        logits=logits, tokens=torch.full((b, w), MASK), candidates=candidates, undecided=candidates.clone(),
        window_start=0, gen_start=0, gen_length=w, block_start=z + block_start, block_end=z + block_end, step=z,
        block_steps=z + 1, block_mask_count=z + w, decoded=z, active=torch.ones(b, dtype=torch.bool),
        generators=[torch.Generator() for _ in range(b)], special=SpecialTokens(mask=MASK, eos=EOS, pad=0),
    )


def test_credit_matches_the_spec_vector():
    proc = CreditProcessor(0.7, 0.8, 0.2)
    state = PolicyState(1, torch.device("cpu"))
    proc.init_state(state)
    logits = dist(V, Q)[None, None]
    credit = [0.9029, 1.6252, 2.2030, 2.6653, 3.0351, 3.3310, 3.5677, 3.7570]
    fused = [0.7018, 0.7467, 0.7721, 0.7883, 0.7993, 0.8071, 0.8129, 0.8172]
    got = []
    for k in range(8):
        out = proc(logits, _ctx(logits, torch.ones(1, 1, dtype=torch.bool)), state)
        assert proc.credits(state, 0) == {0: {5: pytest.approx(credit[k], abs=1e-4)}}
        got.append(torch.softmax(out[0, 0], -1).max().item())
        assert got[-1] == pytest.approx(fused[k], abs=1e-4)
    # the processor's fused confidence first passes 0.8 on call 6, as in docs/methods.md#creditdecoding
    assert [f >= 0.8 for f in got].index(True) == 5


def test_credit_commits_two_positions_one_step_earlier_than_threshold():
    model = ScriptedLM.from_steps(V, [rows(dist(V, Q), dist(V, Q), dist(V, Q))])
    out, steps = run(model, "creditdecoding", threshold=0.745, block_length=3)
    # call 1: all fused 0.7018 < 0.745 -> only the forced pick (first index); call 2: 0.7467 -> both commit
    assert steps.tolist() == [[0, 1, 1]] and out.seq_nfe == [2] and out.tokens.tolist() == [[5, 5, 5]]
    out, steps = run(model, "threshold", threshold=0.745, block_length=3)
    assert steps.tolist() == [[0, 1, 2]] and out.seq_nfe == [3]


def test_credit_resets_per_block_and_per_prompt():
    model = ScriptedLM.from_steps(V, [rows(*[dist(V, Q)] * 4)])
    out, steps = run(model, "creditdecoding", threshold=0.745, block_length=2)
    # block 2 reuses block offsets 0/1: without the reset it would inherit credit (offset 1 would reach 0.7721
    # and commit position 3 first, giving [0, 1, 3, 2])
    assert steps.tolist() == [[0, 1, 2, 3]]
    s = out.trace.steps[2]  # first step of block 2: fresh credit, one call's worth
    conf = out.trace.to_generation_coords(s.confidence, s.window_start, float("nan"))
    assert conf[0, 2].item() == pytest.approx(0.7018, abs=1e-4)
    # the same Policy object used for two prompts in a row gives the same result each time (no leak)
    policy = make_policy("creditdecoding", threshold=0.745)
    a, sa = run(model, policy, block_length=2)
    b, sb = run(model, policy, block_length=2)
    assert torch.equal(sa, sb) and torch.equal(a.tokens, b.tokens) and torch.equal(sa, steps)


# ---------------------------------------------------------------------------------------------------------
# Prophet early commit


@pytest.mark.parametrize("g,s,gap_value,expected", [
    (84, 256, 7.5, True), (84, 256, 7.49, False), (85, 256, 5.0, True), (171, 256, 4.99, False), (172, 256, 2.5, True),
])
def test_prophet_should_exit_vectors(g, s, gap_value, expected):
    assert should_exit(g / s, gap_value) is expected


def test_prophet_threshold_by_progress():
    assert prophet_threshold(torch.tensor([0.0, 0.329, 0.33, 0.669, 0.67, 1.0])).tolist() == [7.5, 7.5, 5.0, 5.0, 2.5, 2.5]


def _gaps(values, tokens=None, call_values=None):
    tokens = tokens or [10 + i for i in range(len(values))]
    return rows(*[gap(V, t, v) for t, v in zip(tokens, values)])


def test_early_commit_fires_all_in():
    steps_ = [_gaps([1, 2, 3, 4, 5, 6]), _gaps([8, 8, 8, 8, 8, 8])]
    model = ScriptedLM.from_steps(V, steps_)
    out, steps = run(model, "lowconf", steps=6, block_length=6, early_commit=True)
    # step 0: min gap of the answer positions 0..4 is 1 < 7.5 (the reference's mean, 3, too), lowconf commits the
    # most confident (pos 5); step 1: min 8 >= 5.0 (progress g/S = 2/6 >= 0.33) -> all-in
    assert steps.tolist() == [[1, 1, 1, 1, 1, 0]] and out.seq_nfe == [2]
    assert out.tokens.tolist() == [[10, 11, 12, 13, 14, 15]]
    same, s2 = run(model, "earlycommit", steps=6, block_length=6)
    assert torch.equal(s2, steps)


def test_early_commit_threshold_drops_with_progress():
    model = ScriptedLM.from_steps(V, [_gaps([6.0, 5.9, 5.8, 5.7, 5.6, 5.5])])
    out, steps = run(model, "earlycommit", steps=6, block_length=6)
    # default (reference) progress g/S: step 0 is 1/6 < 0.33 (7.5 needed); step 1 is 2/6 >= 0.33 (5.0) <= the
    # answer positions' mean 5.8 (0..4, position 0 decided but still read)
    assert steps.tolist() == [[0, 1, 1, 1, 1, 1]] and out.seq_nfe == [2]
    # the previous default (decided share, every undecided position): progress 0/6, 1/6 need 7.5; at 2/6 the
    # threshold is 5.0 <= mean 5.65 of positions 2..5
    out, steps = run(model, "earlycommit", steps=6, block_length=6, answer_region="all",
                     early_commit_progress="decided")
    assert steps.tolist() == [[0, 1, 2, 2, 2, 2]] and out.seq_nfe == [3]
    out, steps = run(model, "earlycommit", steps=6, block_length=6, early_commit_thresholds="7,7,7")
    assert steps.tolist() == [[0, 1, 2, 3, 4, 5]]


def test_early_commit_answer_region_and_reduction():
    model = ScriptedLM.from_steps(V, [_gaps([1.3, 1.2, 1.1, 9, 9, 9])])
    out, steps = run(model, "earlycommit", steps=6, block_length=6, answer_region=(3, 6))
    # region mean 9 >= 7.5 at step 0; the all-in commits the whole generation (the reference's scope)
    assert steps.tolist() == [[0, 0, 0, 0, 0, 0]] and out.seq_nfe == [1]
    out, steps = run(model, "earlycommit", steps=6, block_length=6, answer_region=(3, 6), early_commit_scope="region")
    assert steps.tolist() == [[1, 2, 3, 0, 0, 0]] and out.seq_nfe == [4]  # only the region; 0..2 by the quota
    model = ScriptedLM.from_steps(V, [_gaps([9.5, 9.4, 9.3, 9.2, 9.1, 6])])
    kw = dict(threshold=0.99999, block_length=6, early_commit=True, answer_region="0:6")
    _, mean_steps = run(model, "threshold", early_commit_gap="mean", **kw)
    _, min_steps = run(model, "threshold", **kw)  # min is the default
    assert mean_steps.tolist() == [[0, 0, 0, 0, 0, 0]]  # mean 8.75 fires at once (the reference's reduction)
    assert min_steps.tolist() == [[0, 1, 1, 1, 1, 1]]  # min 6 < 7.5 at g/S = 1/6; at 2/6 >= 0.33 the threshold is 5.0


# ---------------------------------------------------------------------------------------------------------
# AdaBlock


def _window_logits(n, delims):
    """[1, n, V]: ordinary argmax (token 5, p=0.9) except ``delims`` {offset: prob} predicting NL."""
    out = torch.stack([peaked(V, NL, delims[i]) if i in delims else peaked(V, 5, 0.9) for i in range(n)])
    return out[None]


@pytest.mark.parametrize("threshold,remaining,expected", [(0.3, 64, 11), (0.7, 64, 8), (0.3, 4, 4)])
def test_adablock_length_spec_vectors(threshold, remaining, expected):
    sched = AdaptiveBlocks(64, 8, 64, delimiters=[NL], delimiter_threshold=threshold)
    assert sched.window == 16
    logits = _window_logits(64, {3: 0.25, 10: 0.6, 20: 0.95})
    start = torch.tensor([64 - remaining])
    end = sched.open_block(start, torch.tensor([True]), logits, 0, torch.full((1, 64), MASK), 64)
    assert int(end[0] - start[0]) == expected


def test_adablock_delimiters_from_tokenizer():
    from dllm.training.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    model = ScriptedLM(len(tok), tokenizer=tok)
    sched = AdaptiveBlocks(16, 16, 16).bind(model)
    assert sched.delimiter_ids == tok("\n", add_special_tokens=False)["input_ids"]
    assert AdaptiveBlocks(16, 16, 16, delimiters=".,\\n").bind(model).delimiter_ids == sorted(
        tok(".\n", add_special_tokens=False)["input_ids"])
    with pytest.raises(DllmError, match="not a single token"):
        AdaptiveBlocks(16, 16, 16, delimiters=["ab"]).bind(model)
    with pytest.warns(RuntimeWarning, match="default block_length"):
        AdaptiveBlocks(16, 16, 16).bind(ScriptedLM(V))  # no tokenizer: default newline unresolvable -> fixed


def test_adablock_quota_budget_per_variable_block():
    # block 1 ends at the delimiter at offset 2 (length 3); with steps = G/2 it gets ceil(3 * 4 / 8) = 2 steps
    call0 = rows(*[peaked(V, 5 + i, 0.8 - 0.05 * i) for i in range(2)], peaked(V, NL, 0.9),
                 *[peaked(V, 5, 0.5)] * 5)
    later = rows(*[peaked(V, t, 0.8 - 0.05 * i) for i, t in enumerate([5, 6, 7, 8, 10, 11, 12, 13])])
    model = ScriptedLM.from_steps(V, [call0, later])
    out, steps = run(model, "lowconf", steps=4, block_length=4, block_schedule="adaptive", delimiters=[NL],
                     window_fraction=0.5)
    ends = [int(s.block_end[0]) - out.trace.gen_start for s in out.trace.steps]
    assert ends[:2] == [3, 3] and ends[2] == 7 and ends[-1] == 8
    # quota 3 masks over 2 steps -> 2 then 1; block 2 [3, 7): 4 masks over 2 steps; block 3 [7, 8): 1 step
    assert steps.tolist() == [[0, 1, 0, 2, 2, 3, 3, 4]]


# ---------------------------------------------------------------------------------------------------------
# Composition: credits + adaptive blocks + early commit + EoTP


def test_composition_order():
    eos_hi = peaked(V, EOS, 0.95)
    low = [gap(V, 10 + i, 0.5) for i in range(4)]
    call0 = rows(dist(V, Q), dist(V, Q), peaked(V, NL, 0.9), *low, eos_hi)
    call1 = call0
    call2 = rows(dist(V, Q), dist(V, Q), peaked(V, NL, 0.9), gap(V, 10, 8.0), peaked(V, NL, 0.5),
                 gap(V, 12, 8.0), gap(V, 13, 8.0), eos_hi)
    model = ScriptedLM.from_steps(V, [call0, call1, call2])
    opts = dict(threshold=0.745, block_length=4, block_schedule="adaptive", delimiters=[NL], window_fraction=0.5,
                early_commit=True, early_commit_gap="mean", eotp="threshold")
    out, steps = run(model, "creditdecoding", **opts)
    # step 0: AdaBlock cuts block [0, 3) at the NL (p=0.9); credit-fused NL 0.9355 commits; EoTP commits the
    #         EOS predicted at 7 (p=0.95, outside the block). step 1: credit lifts positions 0/1 to 0.7467 >= 0.745.
    # step 2: block [3, 5) (NL at 4, p=0.5 >= 0.3); the answer positions 0..4 from the block on are 3 and 4:
    #         mean gap (the reference's reduction) (8 + ln 15) / 2 = 5.35 >= 5.0 (progress g/S = 3 / (2 * 8 / 2)) -> all-in commits 3..6.
    assert steps.tolist() == [[1, 1, 0, 2, 2, 2, 2, 0]]
    assert [int(s.block_end[0]) - out.trace.gen_start for s in out.trace.steps] == [3, 3, 5]
    assert out.tokens.tolist() == [[5, 5, NL, 10, NL, 12, 13, EOS]] and out.seq_nfe == [3]
    pol = make_policy("creditdecoding", early_commit=True, eotp="threshold")
    assert [type(p).__name__ for p in pol.pieces()] == ["CreditProcessor", "ProbabilityScorer", "ThresholdSelector",
                                                        "EarlyCommit", "EndOfTextPrediction"]
    assert pol.window == "answer"


# ---------------------------------------------------------------------------------------------------------
# EoTP


def _eotp_model():
    call0 = rows(peaked(V, 5, 0.99999), peaked(V, 6, 0.5), peaked(V, 7, 0.5), peaked(V, 8, 0.5),
                 peaked(V, EOS, 0.9992), peaked(V, EOS, 0.6), peaked(V, EOS, 0.9995), peaked(V, EOS, 0.99))
    call1 = rows(peaked(V, 5, 0.9), peaked(V, 6, 0.9), peaked(V, 7, 0.8), peaked(V, 8, 0.7),
                 peaked(V, EOS, 0.6), *[peaked(V, EOS, 0.95)] * 3)
    return ScriptedLM.from_steps(V, [call0, call1])


def test_eotp_reference_cuts_at_leftmost_bf16_tie():
    model = _eotp_model()
    out, steps = run(model, "lowconf", block_length=8, eotp="reference")
    # 0.9992 and 0.9995 both round to 1.0 in bf16 -> cut at 4 (fp32 argmax would be 6); 5.. become EOS at
    # step 0 while 4 stays undecided and is decoded last (it is the least confident)
    assert steps.tolist() == [[0, 1, 2, 3, 4, 0, 0, 0]]
    assert out.tokens.tolist() == [[5, 6, 7, 8, EOS, EOS, EOS, EOS]] and out.seq_nfe == [5]
    base, _ = run(model, "lowconf", block_length=8)
    assert base.seq_nfe == [8]  # without EoTP the confident EOS tail is decoded one by one first


def test_eotp_threshold_cuts_at_leftmost_confident_eos_and_finishes():
    model = _eotp_model()
    out, steps = run(model, "lowconf", block_length=8, eotp="threshold", eotp_threshold=0.995)
    # leftmost EOS with p >= 0.995 is position 4 (0.9992): 4.. become EOS at step 0 (position 0 by the quota)
    assert steps.tolist() == [[0, 1, 2, 3, 0, 0, 0, 0]] and out.seq_nfe == [4]
    # everything before the cut decided -> Decision.finish closes the row in the same step
    call = rows(peaked(V, 5, 0.9), gap(V, 6, 9.0), *[peaked(V, EOS, 0.97)] * 6)
    model = ScriptedLM.from_steps(V, [call])
    out, steps = run(model, "threshold", threshold=0.95, block_length=4, eotp="threshold")
    assert steps.tolist() == [[1, 0, 0, 0, 0, 0, 0, 0]] and out.seq_nfe == [2]
    out, steps = run(model, "threshold", threshold=0.8, block_length=4, eotp="threshold")
    assert steps.tolist() == [[0] * 8] and out.seq_nfe == [1]


def _identity_filter(k: int, cut: float = 0.9, scale: float = 10.0) -> FilterMLP:
    """A hand-made filter accepting exactly the positions with top-1 probability > ``cut`` (at tau 0.5)."""
    f = FilterMLP(k, k, 2)
    with torch.no_grad():
        f.linear1.weight.copy_(torch.eye(k)), f.linear1.bias.zero_()
        f.linear2.weight.copy_(scale * torch.eye(k)), f.linear2.bias.fill_(-scale * cut)
    return f


@pytest.fixture(scope="module")
def filters(tmp_path_factory):
    d = tmp_path_factory.mktemp("filters")
    ident = save_filter(_identity_filter(4), d / "ident", threshold=0.5)
    all_ = FilterMLP(4)
    with torch.no_grad():
        all_.linear2.weight.zero_(), all_.linear2.bias.fill_(20.0)
    accept_all = save_filter(all_, d / "all")
    with torch.no_grad():
        all_.linear2.bias.fill_(-20.0)
    accept_none = save_filter(all_, d / "none")
    return {"ident": str(ident), "all": str(accept_all), "none": str(accept_none)}


@pytest.mark.parametrize("name", sorted(dllm.policies()))
def test_eotp_and_early_commit_are_options_of_every_policy(name, filters):
    extra = {"filter_path": filters["all"]} if name == "learnedfilter" else {}
    assert {"eotp", "eotp_threshold", "early_commit"} <= {o.name for o in policy_options(name)}
    pol = make_policy(name, eotp="threshold", **extra)
    assert isinstance(pol.modifiers[-1], EndOfTextPrediction) and pol.window == "answer"
    pol = make_policy(name, early_commit=True, **extra)
    assert any(isinstance(m, EarlyCommit) for m in pol.modifiers)


# ---------------------------------------------------------------------------------------------------------
# Learn2PD filter


def test_learned_filter_commit_rule(filters):
    call = rows(peaked(V, 5, 0.95), peaked(V, 6, 0.5), peaked(V, 7, 0.92), peaked(V, 8, 0.3),
                peaked(V, 9, 0.91), peaked(V, 10, 0.2), peaked(V, 11, 0.3), peaked(V, 12, 0.99))
    model = ScriptedLM.from_steps(V, [call])
    out, steps = run(model, "learnedfilter", filter_path=filters["ident"], block_length=4)
    # block 1: accepted {0, 2} (p > 0.9) plus the most confident (0); then one per step by confidence
    # block 2: accepted {4, 7}; the filter (K=4) sees each 4-block whole
    assert steps.tolist() == [[0, 1, 0, 2, 3, 5, 4, 3]]
    out8, steps8 = run(model, "learnedfilter", filter_path=filters["ident"], block_length=8)
    # an 8-block is scored as two 4-chunks: the same position-local acceptance
    assert steps8.tolist() == [[0, 1, 0, 2, 0, 4, 3, 0]]
    base, bsteps = run(model, "lowconf", block_length=4)
    never, nsteps = run(model, "learnedfilter", filter_path=filters["all"], block_length=4, threshold=1.01)
    none, zsteps = run(model, "learnedfilter", filter_path=filters["none"], block_length=4)
    assert torch.equal(nsteps, bsteps) and torch.equal(zsteps, bsteps) and never.seq_nfe == base.seq_nfe == [8]
    every, esteps = run(model, "learnedfilter", filter_path=filters["all"], block_length=4)
    assert esteps.tolist() == [[0] * 4 + [1] * 4] and every.seq_nfe == [2]


def test_filter_save_load_and_padding(filters, tmp_path):
    lf = load_filter(filters["ident"])
    assert set(lf.module.state_dict()) == {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}
    assert lf.block_length == 4 and lf.threshold == 0.5 and sum(p.numel() for p in FilterMLP(32).parameters()) == 2112
    x = torch.tensor([[0.95, 0.2, 0.91]])
    padded = lf.module(torch.tensor([[0.95, 0.2, 0.91, 0.0]]))[:, :3]
    assert torch.allclose(lf.module(x), padded)
    with pytest.raises(DllmError, match="not a directory"):
        load_filter(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    with pytest.raises(DllmError, match="lacks"):
        load_filter(tmp_path / "bad")


def _label_model():
    # final tokens [5, 6, 7, 8] under one-token-per-step lowconf
    c0 = rows(peaked(V, 5, 0.9), peaked(V, 6, 0.8), peaked(V, 9, 0.7), peaked(V, 8, 0.6))
    c1 = rows(peaked(V, 5, 0.9), peaked(V, 6, 0.8), peaked(V, 7, 0.7), peaked(V, 5, 0.6))
    c2 = rows(peaked(V, 5, 0.9), peaked(V, 6, 0.8), peaked(V, 7, 0.7), peaked(V, 8, 0.6))
    return ScriptedLM.from_steps(V, [c0, c1, c2])


def test_trace_labels_and_oracle():
    model = _label_model()
    out, steps = run(model, "lowconf", block_length=4)
    assert out.tokens.tolist() == [[5, 6, 7, 8]] and steps.tolist() == [[0, 1, 2, 3]]
    f, lab, ok, who = trace_examples(out.trace, out.tokens, 4)
    assert torch.allclose(f, torch.tensor([[0.9, 0.8, 0.7, 0.6], [1, 0.8, 0.7, 0.6], [1, 1, 0.7, 0.6], [1, 1, 1, 0.6]]))
    assert (lab & ok).tolist() == [[1, 1, 0, 1], [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]]
    assert ok.tolist() == [[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]] and who.tolist() == [0, 0, 0, 0]
    # the oracle commits 0, 1, 3 at step 0 and 2 at step 1
    assert oracle_nfe(out.trace, out.tokens, [EOS]) == [2]
    egp, esteps = run(model, oracle_policy(out.tokens), block_length=4)
    assert esteps.tolist() == [[0, 0, 1, 0]] and egp.tokens.tolist() == [[5, 6, 7, 8]]
    # stuck guard: nothing ever matches -> the most confident position takes its target token each step
    stuck, ssteps = run(model, oracle_policy(torch.tensor([[10, 11, 12, 13]])), block_length=4)
    assert ssteps.tolist() == [[0, 1, 2, 3]] and stuck.tokens.tolist() == [[10, 11, 12, 13]]


def _pick_threshold(probs, labels, valid, target):
    """Independent oracle of the threshold rule: the smallest grid value whose accepts (``p > tau``) on the
    valid positions have precision >= ``target`` (and at least one accept), else the reference's default."""
    p, y = probs[valid].tolist(), labels[valid].bool().tolist()
    table = []
    for tau in THRESHOLD_GRID:
        hits = [yi for pi, yi in zip(p, y) if pi > tau]
        table.append((tau, sum(hits) / len(hits) if hits else 1.0, len(hits) / len(p)))
    picked = next((tau for tau, prec, rate in table if prec >= target and rate > 0), DEFAULT_THRESHOLD)
    return picked, table


def _filter_oracle_commits(module, tau, trace, block_length):
    """Per trace step, the commits ``learnedfilter`` must make with ``module``: the undecided block positions
    the filter accepts (features: top-1 probability if undecided, 1.0 if decided, 0 padding) plus the quota's
    single most confident candidate (steps = gen_length here: one position per step)."""
    expected, accepted_any, rejected_any = [], False, False
    for s in trace.steps:
        want = torch.zeros_like(s.committed)
        for b in range(want.shape[0]):
            if not s.active[b] or not s.candidates[b].any():
                continue
            lo, hi = int(s.block_start[b]) - s.window_start, int(s.block_end[b]) - s.window_start
            cand, conf = s.candidates[b, lo:hi], s.confidence[b, lo:hi]
            feats = torch.where(cand, conf, torch.ones_like(conf))
            feats = torch.nn.functional.pad(feats, (0, block_length - feats.numel()))
            with torch.no_grad():
                accept = (torch.sigmoid(module(feats[None].float()))[0, :hi - lo] > tau) & cand
            accepted_any |= bool(accept.any())
            rejected_any |= bool((cand & ~accept).any())
            accept[torch.where(cand, conf, torch.full_like(conf, float("-inf"))).argmax()] = True
            want[b, lo:hi] = accept
        expected.append(want)
    return expected, accepted_any, rejected_any


def test_collect_train_save_roundtrip(tmp_path):
    model = ScriptedLM(V, 8, content_script(V, seed=1, eos_after=5))
    prompts = [[5 + i, 6, 7] for i in range(8)]
    data = collect_filter_data(model, prompts, gen_length=8, block_length=4, batch_size=3, trajectory="baseline")
    assert data.features.shape[1] == 4 and len(data) > 0 and set(data.prompt.tolist()) <= set(range(8))
    egp = collect_filter_data(model, prompts, gen_length=8, block_length=4, batch_size=3)  # the default, as the reference
    assert len(egp) < len(data) and egp.info["trajectory"] == "oracle"
    _, split = train_filter(data, iterations=60, patience=1000, val_fraction=0.25)
    assert split["val_prompts"] == 2 and split["train_prompts"] == 6
    # The suggested threshold is the one the selection rule picks from the validation table, recomputed here from
    # the module's own predictions (val_fraction=0: every prompt validates, so the validation positions are known).
    picks, qualifying = [], []
    for target in (0.55, 0.75, 0.99):
        module, stats = train_filter(data, iterations=60, patience=1000, val_fraction=0.0, target_precision=target,
                                     threshold_rule="pooled")
        with torch.no_grad():
            probs = torch.sigmoid(module(data.features.float()))
        picked, table = _pick_threshold(probs, data.labels, data.valid, target)
        assert stats["threshold"] == picked, (target, table)
        assert [(r["threshold"], r["precision"], r["accept_rate"]) for r in stats["val_thresholds"]] == \
            [pytest.approx(row) for row in table]
        picks.append(picked)
        qualifying.append(sum(prec >= target and rate > 0 for _, prec, rate in table))
    # the targets take every branch of the rule: the smallest of several qualifying values, a later grid value,
    # and the fallback when no value qualifies
    assert qualifying[0] >= 2 and picks[0] < picks[1] < picks[2] == DEFAULT_THRESHOLD, (picks, qualifying)
    assert qualifying[2] == 0

    # Round trip: the reloaded filter is the in-memory one: weights, threshold and every commit decision.
    module, stats = train_filter(data, iterations=60, patience=1000, val_fraction=0.0, target_precision=0.75,
                                 threshold_rule="pooled")
    path = save_filter(module, tmp_path / "f", threshold=stats["threshold"], model="scripted")
    lf = load_filter(path)
    assert torch.equal(lf.module(data.features), module(data.features))
    assert lf.threshold == stats["threshold"] and lf.block_length == 4
    out = dllm.generate(model, prompts[:2], policy="learnedfilter", filter_path=str(path), gen_length=8, block_length=4,
                        trace=True)
    expected, accepted_any, rejected_any = _filter_oracle_commits(module, stats["threshold"], out.trace, 4)
    assert accepted_any and rejected_any  # the in-memory filter both accepts and rejects positions on this run
    assert len(out.trace.steps) == len(expected)
    for s, want in zip(out.trace.steps, expected):
        assert torch.equal(s.committed, want), s.step


def test_train_filter_cli(tmp_path):
    from typer.testing import CliRunner

    from dllm.cli.app import _register, app
    from dllm.models.tiny import make_tiny_checkpoint

    _register()
    ckpt = make_tiny_checkpoint(tmp_path / "tiny", "llada", vocab_size=32, hidden=16, layers=1, heads=2, intermediate=32)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"w{5 + i} w{6 + i} w7" for i in range(6)) + "\n")
    runner = CliRunner()
    res = runner.invoke(app, ["train-filter", str(ckpt), "--out", str(tmp_path / "flt"), "--prompts", str(prompts),
                              "--gen-length", "8", "--block-length", "4", "--iterations", "20", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert load_filter(tmp_path / "flt").block_length == 4
    res = runner.invoke(app, ["train-filter", str(ckpt), "--out", str(tmp_path / "x"), "--gen-length", "6",
                              "--block-length", "4", "--prompts", str(prompts)])
    assert res.exit_code != 0 and isinstance(res.exception, DllmError) and "multiple" in str(res.exception)


# ---------------------------------------------------------------------------------------------------------
# Batches, validation


CONFIGS = [
    ("creditdecoding", dict(threshold=0.6)),
    ("earlycommit", dict(early_commit_thresholds="3,2,1")),
    ("earlycommit", dict(base="threshold", threshold=0.7, answer_region="2:6", early_commit_gap="min")),
    ("threshold", dict(threshold=0.7, early_commit=True, early_commit_thresholds=4, eotp="reference")),
    ("lowconf", dict(eotp="threshold", eotp_threshold=0.6)),
    ("threshold", dict(threshold=0.7, block_schedule="adaptive", delimiters=[NL], window_fraction=0.5)),
    ("creditdecoding", dict(threshold=0.7, block_schedule="adaptive", delimiters=[NL], early_commit=True, eotp="threshold")),
    ("learnedfilter", dict(eotp="reference")),
]


@pytest.mark.parametrize("name,opts", CONFIGS)
def test_ragged_batch_equals_single_runs(name, opts, filters):
    if name == "learnedfilter":
        opts = dict(opts, filter_path=filters["ident"])
    model = ScriptedLM(V, 8, content_script(V, seed=3, eos_after=5))
    prompts = [[5, 6, 7, 8, 9], [10], [11, 12, 13]]
    batch, bsteps = run(model, name, prompts=prompts, block_length=4, **opts)
    for i, p in enumerate(prompts):
        single, ssteps = run(model, name, prompts=[p], block_length=4, **opts)
        assert batch.tokens[i].tolist() == single.tokens[0].tolist()
        assert batch.seq_nfe[i] == single.seq_nfe[0]
        assert bsteps[i].tolist() == ssteps[0].tolist()


@pytest.mark.parametrize("name,opts,match", [
    ("creditdecoding", dict(threshold=1.5), "threshold"),
    ("creditdecoding", dict(decay_beta=2), "decay_beta"),
    ("creditdecoding", dict(credit_alpah=1), "unknown option 'credit_alpah'"),
    ("earlycommit", dict(base="bogus"), "base .bogus. is not allowed; choose one of: lowconf, threshold"),
    ("earlycommit", dict(early_commit_thresholds=(1, 2)), "three numbers"),
    ("earlycommit", dict(answer_region="5"), "start:end"),
    ("earlycommit", dict(answer_region=(4, 2)), "start < end"),
    ("earlycommit", dict(threshold=0.5), "base='threshold' only"),
    ("earlycommit", dict(early_commit=False), "always commits early"),
    ("threshold", dict(early_commit_thresholds=(1, 2, 3)), "needs early_commit=True"),
    ("threshold", dict(early_commit="maybe"), "true or false"),
    ("lowconf", dict(eotp="bogus"), "eotp mode"),
    ("lowconf", dict(eotp_threshold=0.5), "needs eotp='threshold'"),
    ("lowconf", dict(eotp="reference", eotp_threshold=0.5), "threshold' only"),
    ("lowconf", dict(eotp="threshold", eotp_threshold=2), "eotp_threshold"),
    ("learnedfilter", dict(filter_path="/nonexistent/filter"), "not a directory"),
    ("learnedfilter", dict(filter_path="FILTER", threshold="x"), "threshold must be a number"),
])
def test_option_errors_are_one_line(name, opts, match, filters):
    opts = {k: (filters["ident"] if v == "FILTER" else v) for k, v in opts.items()}
    with pytest.raises(DllmError, match=match) as err:
        make_policy(name, **opts)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("opts,match", [
    (dict(delimiter_threshold=-1), "delimiter_threshold"),
    (dict(window_fraction=0), "window_fraction"),
    (dict(delimiters=[V + 3]), "outside the vocabulary"),
    (dict(answer_region=(9, 12), early_commit=True), "outside the generation"),
])
def test_schedule_and_runtime_errors_are_one_line(opts, match):
    opts.setdefault("delimiters", [NL])
    model = ScriptedLM(V, 8)
    with pytest.raises(DllmError, match=match) as err:
        dllm.generate(model, [PROMPT], policy="threshold", gen_length=8, block_schedule="adaptive", **opts)
    assert "\n" not in str(err.value)


def test_shipped_filter_is_the_default():
    from dllm.samplers.learned import default_filter_path

    assert default_filter_path().is_dir()  # shipped with the package (a skip here hid a wrong path)
    pol = make_policy("learnedfilter")
    lf = load_filter(default_filter_path())
    assert pol.options["threshold"] == lf.threshold and lf.block_length == 16 and lf.config["model"] == "tiny-llada"
