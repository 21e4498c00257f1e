"""Prophet early commit (``earlycommit`` and the ``early_commit`` option of every policy) against the reference's
semantics (docs/methods.md#prophet): which positions are monitored, what the all-in commits, how progress is
counted, and the previous behaviour kept under named option values. Scripted models give exact logit gaps, so
every expected commit step below is worked out by hand from the rule."""

from __future__ import annotations

import pytest
import torch
from fake_model import EOS, ScriptedLM, content_script, gap

import dllm
from dllm.errors import DllmError
from dllm.samplers.prophet import DEFAULT_REGION, EarlyCommit
from dllm.samplers.registry import make_policy, policy_options

V = 32
PROMPT = [7, 8, 9]


def run(model, policy, prompts=None, **kw):
    """Decode with a trace. The cases below pin the reference's rule, so early commit averages the monitored gaps
    (``early_commit_gap="mean"``) unless a case names the reduction; ``early_commit_gap=None`` is the default
    (``min``), pinned by ``test_default_gap_is_min``."""
    model.reset()
    if policy == "earlycommit" or kw.get("early_commit"):
        kw.setdefault("early_commit_gap", "mean")
    kw.setdefault("gen_length", model.gen_length)
    out = dllm.generate(model, prompts or [PROMPT], policy=policy, trace=True, **kw)
    return out, out.trace.commit_step().tolist()


def gaps(values, tokens=None):
    """[G, V] logits: position i predicts ``tokens[i]`` (default 10 + i) exactly ``values[i]`` above the rest."""
    tokens = tokens or [10 + i for i in range(len(values))]
    return torch.stack([gap(V, t, v) for t, v in zip(tokens, values)])


# ---------------------------------------------------------------------------------------------------------
# What is monitored


def _answer_then_eos(answer_gap_later: float):
    """G = 12: five uncertain answer positions (gap 0.1) and a seven-position EOS tail with huge gaps (17).
    From the 4th forward on the answer positions have gap ``answer_gap_later``."""
    eos = [17.0] * 7
    tokens = [10, 11, 12, 13, 14] + [EOS] * 7
    early = gaps([0.1] * 5 + eos, tokens)
    later = gaps([answer_gap_later] * 5 + eos, tokens)
    return ScriptedLM.from_steps(V, [early, early, early, later])


def test_eos_padding_cannot_fire_while_the_answer_is_uncertain():
    model = _answer_then_eos(answer_gap_later=0.1)
    out, steps = run(model, "earlycommit", steps=12, block_length=12)
    # the answer positions' mean stays 0.1 < every threshold: never fires; lowconf decodes one position a step,
    # the EOS tail first (most confident; ties to the lower index: 5 at step 0 .. 11 at step 6), then the answer
    # (0 at step 7 .. 4 at step 11)
    assert steps == [[7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 6]] and out.seq_nfe == [12]
    # the previous default (every undecided position): mean (5 * 0.1 + 7 * 17) / 12 = 9.96 >= 7.5 at once
    _, old = run(model, "earlycommit", steps=12, block_length=12, answer_region="all", early_commit_progress="decided")
    assert old == [[0] * 12]


def test_fires_when_the_answer_positions_become_confident():
    model = _answer_then_eos(answer_gap_later=9.0)
    out, steps = run(model, "earlycommit", steps=12, block_length=12)
    # steps 0-2 commit EOS positions 5, 6, 7; step 3 (g/S = 4/12 >= 0.33, threshold 5.0) reads mean 9 -> the
    # all-in commits every undecided position, the rest of the EOS tail included
    assert steps == [[3, 3, 3, 3, 3, 0, 1, 2, 3, 3, 3, 3]] and out.seq_nfe == [4]
    assert out.tokens.tolist() == [[10, 11, 12, 13, 14] + [EOS] * 7]


def test_answer_region_option_places_the_monitored_positions():
    # offsets 0-2 are a preamble (gap 0.2), the answer is at 3-5 (gap 8), then filler (gap 1)
    model = ScriptedLM.from_steps(V, [gaps([0.2, 0.2, 0.2, 8.0, 8.0, 8.0, 1.0, 1.0])])
    base = dict(steps=8, block_length=8)
    # default 0:5 reads (0.2 * 3 + 8 * 2) / 5 = 3.32: fires only at g/S = 6/8 >= 0.67 (2.5); before that lowconf
    # commits 3, 4, 5 (gap 8), then 6, 7 (gap 1 > 0.2, ties to the lower index), so the all-in at step 5 takes 0-2
    _, steps = run(model, "earlycommit", **base)
    assert steps == [[5, 5, 5, 0, 1, 2, 3, 4]]
    # answer_region=3:6 reads mean 8 >= 7.5 at the first forward; the all-in commits everything ("monitor 3,
    # commit all", as the reference monitors 5 and commits the whole canvas)
    out, steps = run(model, "earlycommit", answer_region="3:6", **base)
    assert steps == [[0] * 8] and out.seq_nfe == [1]
    # early_commit_scope=region commits only the region; the rest is left to the quota (0.2 < 1: 6, 7 first)
    _, steps = run(model, "earlycommit", answer_region="3:6", early_commit_scope="region", **base)
    assert steps == [[3, 4, 5, 0, 0, 0, 1, 2]]
    # an end past the generation is clipped: 3:100 monitors 3-7, mean (8 * 3 + 1 * 2) / 5 = 5.2 < 7.5, then
    # >= 5.0 at g/S = 3/8 >= 0.33: steps 0, 1 commit 3, 4; step 2 commits the rest
    _, steps = run(model, "earlycommit", answer_region="3:100", **base)
    assert steps == [[2, 2, 2, 0, 1, 2, 2, 2]]


def test_decided_region_positions_are_still_read():
    # call 0: position 0 gap 6 (the quota's pick), 1 gap 4, the rest 1; call 1: position 0 (now decided) gap 12
    call0 = gaps([6.0, 4.0, 1.0, 1.0, 1.0, 1.0])
    call1 = gaps([12.0, 4.0, 1.0, 1.0, 1.0, 1.0])
    model = ScriptedLM.from_steps(V, [call0, call1])
    out, steps = run(model, "earlycommit", steps=6, block_length=6, answer_region="0:2")
    # step 0: mean (6 + 4) / 2 = 5 < 7.5; step 1 (g/S = 2/6 >= 0.33, threshold 5.0): mean (12 + 4) / 2 = 8 reads
    # the decided position 0 as the reference does -> all-in. Reading undecided positions only would see 4 < 5.0.
    assert steps == [[0, 1, 1, 1, 1, 1]] and out.seq_nfe == [2]


def test_min_gap_option():
    model = ScriptedLM.from_steps(V, [gaps([9.5, 9.4, 9.3, 9.2, 1.0, 1.0])])
    kw = dict(steps=6, block_length=6, answer_region="0:5")
    _, mean_steps = run(model, "earlycommit", **kw)
    _, min_steps = run(model, "earlycommit", early_commit_gap="min", **kw)
    assert mean_steps == [[0] * 6]  # mean (9.5 + 9.4 + 9.3 + 9.2 + 1) / 5 = 7.68 >= 7.5
    # min 1 (position 4) < 2.5 throughout: never fires; lowconf decodes 0-3 in gap order, then 4, 5 (lower index)
    assert min_steps == [[0, 1, 2, 3, 4, 5]]


def test_default_gap_is_min():
    """The default reduction is ``min`` (docs/methods.md#prophet): decided region positions, whose gaps are large,
    cannot outvote the one the model is still unsure of. Call 0: every position uncertain (gap 1); from call 1 on
    the decided positions read gap 12 and the undecided 1. The mean of region 0:5 passes 5.0 once three of the
    five are decided; the minimum stays 1 while any region position is undecided."""
    first = gaps([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])

    def script(prompt, call, gen):
        if call == 0:
            return first
        decided = min(call, 6)  # lowconf commits one position a step, lowest index first (all ties)
        return gaps([12.0] * decided + [1.0] * (6 - decided))

    model = ScriptedLM(V, 6, script)
    kw = dict(steps=6, block_length=6)
    _, default = run(model, "earlycommit", early_commit_gap=None, **kw)
    _, mean = run(model, "earlycommit", **kw)
    # min: 1 < every threshold while position 4 (the region's last) is undecided, 12 >= 2.5 once it is: at call 5
    # (g/S = 6/6) the all-in commits the last position, which the quota would also have taken: one token a step
    assert default == [[0, 1, 2, 3, 4, 5]]
    # mean: call 2 (g/S = 3/6 >= 0.33, threshold 5.0) reads (12 * 2 + 1 * 3) / 5 = 5.4 -> all-in at step 2
    assert mean == [[0, 1, 2, 2, 2, 2]]


# ---------------------------------------------------------------------------------------------------------
# Progress: the reference's g / S


def test_progress_is_the_reference_step_count():
    # G = 6, S = 6, one block, one token a step, the monitored gaps all 5.2 (between the mid 5.0 and the early
    # 7.5 thresholds). Reference (generate_earlyexit.py: g counted before the forward, progress g / S): g = 1 ->
    # 0.167 (early), g = 2 -> 0.333 >= 0.33 (mid) -> fires on the 2nd forward (step 1)
    model = ScriptedLM.from_steps(V, [gaps([5.4, 5.3, 5.2, 5.1, 5.0, 5.2])])  # answer 0:5 mean 5.2
    out, steps = run(model, "earlycommit", steps=6, block_length=6)
    assert steps == [[0, 1, 1, 1, 1, 1]] and out.seq_nfe == [2]
    # early_commit_progress=decided (previous count): decided share 0/6, 1/6 early, 2/6 mid -> step 2
    _, steps = run(model, "earlycommit", steps=6, block_length=6, early_commit_progress="decided")
    assert steps == [[0, 1, 2, 2, 2, 2]]


def test_progress_across_blocks_and_several_tokens_a_step():
    # G = 8, blocks of 4, S = 4: S_b = 2 steps a block, two tokens a step. Monitored 4:8 (block 2), mean 3.0 (between
    # late 2.5 and mid 5.0). Reference: g = 1 -> 1/4 early, g = 2 -> 2/4 mid, g = 3 -> 3/4 >= 0.67 late -> fires on
    # the 3rd forward (block 2's first step), committing 4-7 at once
    model = ScriptedLM.from_steps(V, [gaps([3.9, 3.8, 3.7, 3.6, 3.3, 3.1, 2.9, 2.7])])
    out, steps = run(model, "earlycommit", steps=4, block_length=4, answer_region="4:8")
    assert steps == [[0, 0, 1, 1, 2, 2, 2, 2]] and out.seq_nfe == [3]
    # decided share: 0/8, 2/8 early, 4/8 mid (the quota commits 4, 5), 6/8 late -> fires at step 3 with 6, 7 left
    out, steps = run(model, "earlycommit", steps=4, block_length=4, answer_region="4:8", early_commit_progress="decided")
    assert steps == [[0, 0, 1, 1, 2, 2, 3, 3]] and out.seq_nfe == [4]


# ---------------------------------------------------------------------------------------------------------
# The policy and the early_commit group agree; batch == single


OPTION_SETS = [
    {},
    {"answer_region": "2:6", "early_commit_scope": "region"},
    {"answer_region": "all", "early_commit_progress": "decided"},
    {"early_commit_gap": "min", "early_commit_thresholds": "3,2,1"},
]


@pytest.mark.parametrize("opts", OPTION_SETS)
def test_policy_and_common_option_are_the_same_rule(opts):
    model = ScriptedLM(V, 8, content_script(V, seed=5, eos_after=4))
    prompts = [[5, 6, 7, 8, 9], [10], [11, 12, 13]]
    kw = dict(prompts=prompts, steps=8, block_length=4, **{"early_commit_thresholds": "4,3,2", **opts})
    a, sa = run(model, "earlycommit", **kw)
    b, sb = run(model, "lowconf", early_commit=True, **kw)
    assert sa == sb and torch.equal(a.tokens, b.tokens) and a.seq_nfe == b.seq_nfe
    pa, pb = make_policy("earlycommit", **opts), make_policy("lowconf", early_commit=True, **opts)
    keys = [o.name for o in policy_options("earlycommit") if o.name.startswith(("early_commit_", "answer_region"))]
    assert {k: pa.options[k] for k in keys} == {k: pb.options[k] for k in keys}


def test_a_row_reads_its_region_only_from_its_own_block_on():
    """A region behind the row's current block is not read, even where the window still holds it because
    another row of the batch lags there (otherwise a row would decode differently in a batch)."""
    fast, slow = (5, 6), (7,)

    def script(prompt, call, gen):
        if prompt == fast:  # block 1 confident (gap 6: p 0.929 >= 0.9) but below 7.5; later its region shows 9
            return gaps([6.0 if call == 0 else 9.0] * 4 + [1.0] * 4)
        return gaps([1.0] * 8)  # slow: one position a step, gap 1 never fires

    model = ScriptedLM(V, 8, script)
    kw = dict(threshold=0.9, block_length=4, early_commit=True, answer_region="0:4")
    batch, bsteps = run(model, "threshold", prompts=[list(fast), list(slow)], **kw)
    alone, asteps = run(model, "threshold", prompts=[list(fast)], **kw)
    # fast row alone: step 0 commits 0-3 (p 0.929), mean 6 < 7.5; from step 1 its block is 4-7 and the region
    # 0-3 lies behind it: nothing is read, the threshold rule decodes 4-7 one a step (p 0.08, lower index first)
    assert asteps == [[0, 0, 0, 0, 1, 2, 3, 4]] and alone.seq_nfe == [5]
    # in the batch the slow row keeps the window at 0, yet the fast row still ignores its region's gap 9
    assert bsteps[0] == asteps[0] and batch.seq_nfe == [5, 8]


@pytest.mark.parametrize("name,opts", [
    ("earlycommit", {"early_commit_thresholds": "4,3,2"}),
    ("earlycommit", {"early_commit_thresholds": "3,2,1", "answer_region": "0:3"}),
    ("earlycommit", {"early_commit_thresholds": "2,1.5,1", "answer_region": "2:6", "early_commit_gap": "min"}),
    ("threshold", {"threshold": 0.95, "early_commit": True, "early_commit_thresholds": "3,2,1",
                   "early_commit_scope": "region", "answer_region": "0:3"}),
    ("earlycommit", {"early_commit_thresholds": "4,3,2", "answer_region": "all", "early_commit_progress": "decided"}),
])
def test_ragged_batch_equals_single_runs(name, opts):
    model = ScriptedLM(V, 8, content_script(V, seed=3, eos_after=5))
    prompts = [[5, 6, 7, 8, 9], [10], [11, 12, 13]]
    batch, bsteps = run(model, name, prompts=prompts, block_length=4, **opts)
    base = {k: v for k, v in opts.items() if not k.startswith(("early_commit", "answer_region"))}
    plain, _ = run(model, "lowconf" if name == "earlycommit" else name, prompts=prompts, block_length=4, **base)
    assert batch.seq_nfe != plain.seq_nfe  # early commit acted on some row (the test is not vacuous)
    for i, p in enumerate(prompts):
        single, ssteps = run(model, name, prompts=[p], block_length=4, **opts)
        assert batch.tokens[i].tolist() == single.tokens[0].tolist()
        assert batch.seq_nfe[i] == single.seq_nfe[0]
        assert bsteps[i] == ssteps[0]


# ---------------------------------------------------------------------------------------------------------
# Options: defaults, listing, errors


def test_defaults():
    pol = make_policy("earlycommit")
    ec = next(m for m in pol.modifiers if isinstance(m, EarlyCommit))
    assert DEFAULT_REGION == (0, 5)
    # every default is the reference's except the gap reduction (min; the reference's mean is early_commit_gap=mean)
    assert (ec.region, ec.reduce, ec.scope, ec.progress) == ((0, 5), "min", "all", "step")
    assert ec.thresholds == (7.5, 5.0, 2.5)
    listed = {o.name: o.default for o in policy_options("threshold")}
    assert listed["answer_region"] == "0:5" and listed["early_commit_scope"] == "all"
    assert listed["early_commit_progress"] == "step" and listed["early_commit_gap"] == "min"


@pytest.mark.parametrize("name,opts,match", [
    ("earlycommit", {"answer_region": "everything"}, "answer_region must be 'all' or 'start:end'"),
    ("earlycommit", {"answer_region": "0:x"}, "answer_region must be 'all' or"),
    ("earlycommit", {"answer_region": "3:3"}, "0 <= start < end"),
    ("earlycommit", {"answer_region": "-1:4"}, "0 <= start < end"),
    ("earlycommit", {"early_commit_scope": "block"}, "early_commit_scope 'block' is not allowed; choose one of: all, region"),
    ("earlycommit", {"early_commit_progress": "tokens"}, "early_commit_progress 'tokens' is not allowed; choose one of: "
                                                         "step, decided"),
    ("earlycommit", {"early_commit_gap": "max"}, "early_commit_gap 'max' is not allowed; choose one of: mean, min"),
    ("threshold", {"early_commit_scope": "region"}, "early_commit_scope needs early_commit=True"),
    ("threshold", {"early_commit_progress": "decided"}, "early_commit_progress needs early_commit=True"),
    ("threshold", {"early_commit": True, "early_commit_progress": 3}, "early_commit_progress must be text"),
])
def test_option_errors_are_one_line(name, opts, match):
    with pytest.raises(DllmError, match=match) as err:
        make_policy(name, **opts)
    assert "\n" not in str(err.value)


def test_region_past_the_generation_is_a_one_line_error():
    model = ScriptedLM(V, 6)
    with pytest.raises(DllmError, match="answer_region start 6 is outside the generation") as err:
        dllm.generate(model, [PROMPT], policy="earlycommit", gen_length=6, steps=6, block_length=6, answer_region="6:9")
    assert "\n" not in str(err.value)
