"""``saber`` (docs/methods.md#saber): the adaptive threshold, the top-n fallback, the remask count and which positions
the backtrack remasks, on scripted models whose probabilities are exact; blocks smaller than the generation;
termination (net progress); batch == single on the shipped tiny model; option errors and refused combinations.

Notation in the comments: ``c`` = the step's top-1 probability per position, ``tau`` = the threshold (the mean of
the recorded commit-time confidences), ``delta`` = ``c`` minus the position's ``c`` at the previous step (0 at a
block's first step), ``r`` = remasks, ``fix = max(n, committed)``.
"""

from __future__ import annotations

import pytest
import torch
from fake_model import ScriptedLM, peaked, run_scripted

import dllm
from dllm.errors import DllmError
from dllm.evals.synthetic import load_split
from dllm.samplers.policies.saber import Backtrack
from dllm.samplers.registry import make_policy

V = 16
PROMPT = [7, 8, 9]


def step_logits(probs: list[float], tokens: dict[int, int] | None = None) -> torch.Tensor:
    """[G, V] logits: position i proposes token ``tokens.get(i, 4 + i)`` with probability ``probs[i]``."""
    tokens = tokens or {}
    return torch.stack([peaked(V, tokens.get(i, 4 + i), p) for i, p in enumerate(probs)])


def remasked_at(out, row: int = 0) -> list[list[int]]:
    """Per step: the generated positions of ``row`` the engine set back to the mask."""
    gs = out.trace.gen_start
    return [[int(c) + s.window_start - gs for c in s.remasked[row].nonzero().squeeze(1)] for s in out.trace.steps]


def decided_after_each_step(out, row: int = 0) -> list[int]:
    """Per step: how many generated positions of ``row`` are decided after it (commits minus remasks so far)."""
    counts, total = [], 0
    for s in out.trace.steps:
        if s.active[row]:
            total += int(s.committed[row].sum()) - int(s.remasked[row].sum())
            counts.append(total)
    return counts


# ---------------------------------------------------------------------------------------------------------
# the rule on scripted distributions (one block of 8, n = 2, mu = 8: r = 1 whenever the block stays open)

#: step 0: tau = 1.0 (nothing recorded), nothing passes: the top n = 2 (0: .9, 1: .8); fix 2, r 1; deltas = c
#:   (previous 0) -> 1 (.8) is taken back in the same step: only 0 is written. Recorded {0: .9, 1: .8}.
#: step 1: tau = (.9 + .8) / 2 = .85 (1's entry counts although it was taken back): 1 (.86), 2 (.88), 5 (.99) pass
#:   (3 at .84 does not); without 1's entry tau = .9 and only 5 passes (top-2 {5, 2}). fix 3, r 1; deltas 0: .6 - .9
#:   = -.3, 1: +.06, 2: +.38, 5: +.59 -> 0 is remasked.
#: step 2: tau = (.9 + .86 + .88 + .99) / 4 = .9075 (0's entry stays after its remask; cleared: .91 and 0 at .908
#:   fails): 0 (.908, recommitted as 12), 3 (.95), 4 (.96) pass. fix 3, r 1; deltas 0: +.308, 1: .80 - .86 = -.06,
#:   2: .70 - .88 = -.18, 3: +.11, 4: +.26, 5: .75 - .99 = -.24 -> 5 (the most negative delta; the lowest c is 2).
#: step 3: tau = (.908 + .86 + .88 + .95 + .96 + .99) / 6 = .9247: only 5 (.93, as 13) passes -> the top n: {5, 6}.
#:   fix 2, r 1; deltas 0: -.008, 1: .76 - .80 = -.04, 2: +.2, 3: -.05, 4: .90 - .96 = -.06, 5: +.18, 6: +.2 -> 4
#:   (against the commit-time confidence 1 would fall most, .76 - .86 = -.10; the lowest c is 6).
#: step 4: tau = (.908 + .86 + .88 + .95 + .96 + .93 + .5) / 7 = .8554: 4 (.97, as 14) and 7 (.95) pass; the block
#:   is full, nothing is remasked.
RULE_STEPS = [
    step_logits([0.9, 0.8, 0.5, 0.6, 0.7, 0.4, 0.3, 0.2]),
    step_logits([0.6, 0.86, 0.88, 0.84, 0.7, 0.99, 0.3, 0.2]),
    step_logits([0.908, 0.80, 0.70, 0.95, 0.96, 0.75, 0.3, 0.1], {0: 12}),
    step_logits([0.9, 0.76, 0.9, 0.9, 0.9, 0.93, 0.5, 0.4], {0: 12, 5: 13}),
    step_logits([0.9, 0.9, 0.9, 0.9, 0.97, 0.9, 0.9, 0.95], {0: 12, 5: 13, 4: 14}),
]


def test_threshold_fallback_and_backtrack():
    model = ScriptedLM.from_steps(V, RULE_STEPS)
    out, steps = run_scripted(model, "saber", [PROMPT], n=2)
    assert steps == [[2, 1, 1, 2, 4, 3, 3, 4]] and out.seq_nfe == [5]
    assert remasked_at(out) == [[], [0], [5], [4], []]
    assert out.trace.steps[0].committed[0].nonzero().squeeze(1).tolist() == [0]  # 1 taken back in the same step
    assert out.tokens.tolist() == [[12, 5, 6, 7, 14, 13, 10, 11]]
    assert decided_after_each_step(out) == [1, 3, 5, 6, 8]


@pytest.mark.parametrize("n,mu,r", [
    (2, 8, 1),  # the reference's: max(floor(2/2), ceil(2/8)) = 1
    (4, 8, 2),  # floor(n/2) = 2 binds
    (5, 2, 3),  # ceil(5/2) = 3 binds (floor(5/2) = 2)
    (3, 1, 2),  # ceil(3/1) = 3, capped at fix - 1 = 2
    (1, 8, 0),  # the default n: max(0, 1) capped at fix - 1 = 0
])
def test_remask_count_at_the_first_step(n, mu, r):
    # step 0 commits the top n (tau = 1.0), so fix = n; the r least confident of them (delta = c) are taken back in
    # the same step: positions 0 .. n - r - 1 stay. Step 1 (.99 > tau everywhere) fills the block.
    model = ScriptedLM.from_steps(V, [step_logits([0.9 - 0.05 * i for i in range(8)]), step_logits([0.99] * 8)])
    out, steps = run_scripted(model, "saber", [PROMPT], n=n, mu=mu)
    assert steps == [[0] * (n - r) + [1] * (8 - n + r)] and out.seq_nfe == [2]
    assert Backtrack(n, mu).count(torch.tensor([n])).tolist() == [r]


def test_default_n_is_one():
    """``n`` = 1 by default (docs/methods.md#saber; the reference's 2 loses 14 points on the synthetic suite).
    Step 0 (tau = 1.0, nothing passes): n = 1 commits the most confident, position 0 (.9), and takes nothing back
    (r = min(max(0, ceil(1/8)), 0) = 0); n = 2 commits 0 and 1 and takes 1 back (r = 1, lowest delta .85), whose
    entry stays in the mean: tau = (.9 + .85) / 2 = .875. From step 1 every position reads .88: it passes .875, so
    n = 2 fills the block; at n = 1 tau never drops below .88 (.9, then the mean of .9 and .88s), one a step."""
    model = ScriptedLM.from_steps(V, [step_logits([0.9 - 0.05 * i for i in range(8)]), step_logits([0.88] * 8)])
    out, default = run_scripted(model, "saber", [PROMPT])
    _, reference = run_scripted(model, "saber", [PROMPT], n=2)
    # (which .88 goes first is float rounding of the scripted softmax; one a step is the rule)
    assert sorted(default[0]) == list(range(8)) and default[0][0] == 0 and out.seq_nfe == [8]
    assert reference == [[0] + [1] * 7]
    assert make_policy("saber").options["n"] == 1
    # a step where several pass the threshold still backtracks at n = 1: fix = 5 commits, r = ceil(5/8) = 1
    assert Backtrack(1, 8).count(torch.tensor([1, 5, 9])).tolist() == [0, 1, 2]


def test_fix_counts_the_step_commits():
    # n = 2, mu = 2. Step 0: top-2 {0, 1}, r = 1: 1 taken back; tau = (.9 + .85) / 2 = .875. Step 1: 1-5 pass (.91 to
    # .95): fix = 5, r = min(max(1, ceil(5/2)), 4) = 3 (with fix = n = 2 it would be 1); deltas 0: .5 - .9 = -.4,
    # 1: .95 - .85 = .10, 2: .94 - .80 = .14, 3: .18, 4: .22, 5: .26 -> 0 remasked, 1 and 2 taken back. Step 2 fills.
    model = ScriptedLM.from_steps(V, [step_logits([0.9 - 0.05 * i for i in range(8)]),
                                      step_logits([0.5, 0.95, 0.94, 0.93, 0.92, 0.91, 0.2, 0.1]),
                                      step_logits([0.99] * 8)])
    out, steps = run_scripted(model, "saber", [PROMPT], n=2, mu=2)
    assert steps == [[2, 2, 2, 1, 1, 1, 2, 2]] and remasked_at(out) == [[], [0], []]
    assert decided_after_each_step(out) == [1, 3, 8]
    assert Backtrack(2, 2).count(torch.tensor([1, 2, 5, 9])).tolist() == [1, 1, 3, 5]  # fix = max(2, committed)
    assert Backtrack(2, 8).count(torch.tensor([2, 8, 9, 16, 17])).tolist() == [1, 1, 2, 2, 3]


#: two blocks of 4. Block 1: step 0 top-2 {0, 1}, 1 taken back; step 1: tau .85, 1-3 pass (.95-.97), block full.
#: Recorded: .9, .95, .96, .97 (tau .945). Block 2, step 2: 4 (.96), 5 (.95), 6 (.946) pass (tau from block 1's
#: entries; with an empty record tau = 1 and the top-2 {4, 5}, then 5 taken back); fix 3, r 1 among the block only
#: (block 1's positions fell from ~.95 to .1): deltas from 0 at the block's first step -> 6 taken back. Step 3: tau =
#: (.9 + .95 + .96 + .97 + .96 + .95 + .946) / 7 = .948: 6 (.97), 7 (.96) pass, block full.
BLOCK_STEPS = [
    step_logits([0.9, 0.8, 0.5, 0.4, 0.5, 0.5, 0.5, 0.5]),
    step_logits([0.9, 0.95, 0.96, 0.97, 0.5, 0.5, 0.5, 0.5]),
    step_logits([0.1, 0.1, 0.1, 0.1, 0.96, 0.95, 0.946, 0.3]),
    step_logits([0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.97, 0.96]),
]


#: a second prompt that stays in its first block for three steps (confidences .9, .8, .7, .6 at every step)
SLOW = [5, 6]


def by_prompt(scripts: dict[tuple, list[torch.Tensor]]):
    """A script giving each prompt its own list of per-step logits (the last one repeats)."""
    return lambda prompt, call, gen: scripts[prompt][min(call, len(scripts[prompt]) - 1)]


def test_blocks_backtrack_only_the_current_block():
    model = ScriptedLM.from_steps(V, BLOCK_STEPS)
    out, steps = run_scripted(model, "saber", [PROMPT], n=2, block_length=4)
    assert steps == [[0, 1, 1, 1, 2, 2, 3, 3]] and out.seq_nfe == [4]
    assert remasked_at(out) == [[]] * 4
    assert out.tokens.tolist() == [list(range(4, 12))]
    # beside a slower row the batch window at step 2 also covers this row's first block, whose confidences fell
    # most (.97 -> .1): still only its current block is backtracked, as alone
    slow = step_logits([0.9, 0.8, 0.7, 0.6] * 2)
    model = ScriptedLM(V, 8, by_prompt({tuple(PROMPT): BLOCK_STEPS, tuple(SLOW): [slow]}))
    both, steps = run_scripted(model, "saber", [PROMPT, SLOW], n=2, block_length=4)
    assert both.trace.steps[2].window_start == both.trace.gen_start < int(both.trace.steps[2].block_start[0])
    assert steps[0] == [0, 1, 1, 1, 2, 2, 3, 3] and both.seq_nfe[0] == 4 and both.tokens[0].tolist() == list(range(4, 12))


def test_a_refilled_slot_starts_with_an_empty_record():
    # one slot, continuous batching: RULE_STEPS's prompt takes the slot SLOW freed. SLOW recorded entries (.5); if
    # they stayed, RULE_STEPS's first step would commit everything above tau = .5 instead of the top 2
    slow = step_logits([0.5] * 8)
    model = ScriptedLM(V, 8, by_prompt({tuple(PROMPT): RULE_STEPS, tuple(SLOW): [slow]}))
    model.reset()
    out = dllm.generate(model, [SLOW, PROMPT], policy="saber", n=2, gen_length=8, block_length=8,
                        stop_at_eos=False, batch_size=1, continuous=True)
    assert out.tokens[1].tolist() == [12, 5, 6, 7, 14, 13, 10, 11] and out.seq_nfe[1] == 5


# ---------------------------------------------------------------------------------------------------------
# the shipped tiny model


@pytest.fixture(scope="module")
def prompts(tiny) -> list[list[int]]:
    return [dllm.encode_prompt(tiny, ex.prompt, chat=False) for ex in load_split("test", n_per_family=1)]


#: 32-token answers in one block: twice the tiny model's answers, so the backtrack remasks earlier commits; the
#: reference's n = 2 (at the default n = 1 nothing passes the adaptive threshold on this model: one token a step)
LONG = dict(gen_length=32, block_length=32, n=2)


def _requests(monkeypatch) -> list[torch.Tensor]:
    """Record the remask each ``Backtrack`` call asks the engine for."""
    asked: list[torch.Tensor] = []
    call = Backtrack.__call__

    def spy(self, decision, proposal, logits, ctx, state):
        out = call(self, decision, proposal, logits, ctx, state)
        asked.append(out.remask.cpu().clone())
        return out

    monkeypatch.setattr(Backtrack, "__call__", spy)
    return asked


@pytest.mark.parametrize("opts,one_a_step", [({}, False), ({"mu": 1}, True)])
def test_net_progress(tiny, prompts, monkeypatch, opts, one_a_step):
    """Every step leaves at least one more position decided and the engine applies every remask asked (its loop
    guard never binds). With mu = 1, r = fix - 1: exactly one more per step until the step that fills the block."""
    asked = _requests(monkeypatch)
    out = dllm.generate(tiny, prompts, policy="saber", trace=True, stop_at_eos=False, **LONG, **opts)
    assert [a.tolist() for a in asked] == [s.remasked.tolist() for s in out.trace.steps]
    assert sum(int(s.remasked.sum()) for s in out.trace.steps) > 0  # earlier commits were remasked
    for row in range(len(prompts)):
        counts = decided_after_each_step(out, row)
        gains = [b - a for a, b in zip([0] + counts, counts)]
        assert min(gains) >= 1 and counts[-1] == 32 and out.seq_nfe[row] <= 32
        if one_a_step:  # but the last step, which fills the block (nothing is remasked then)
            assert gains[:-1] == [1] * (len(gains) - 1) and out.seq_nfe[row] == len(gains)


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_batch_equals_single(tiny, prompts, cache):
    out = dllm.generate(tiny, prompts, policy="saber", cache=cache, trace=True, **LONG)
    assert len(set(out.seq_nfe)) > 1 and sum(int(s.remasked.sum()) for s in out.trace.steps) > 0
    for i, p in enumerate(prompts):
        one = dllm.generate(tiny, [p], policy="saber", cache=cache, **LONG)
        assert out.tokens[i].tolist() == one.tokens[0].tolist(), f"row {i}: batch != single"
        assert out.seq_nfe[i] == one.seq_nfe[0]
    # two slots for six prompts: continuous batching refills freed slots (the row's record is cleared)
    slots = dllm.generate(tiny, prompts, policy="saber", cache=cache, batch_size=2, continuous=True, **LONG)
    assert slots.tokens.tolist() == out.tokens.tolist() and slots.seq_nfe == out.seq_nfe


# ---------------------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize("opts,needle", [
    ({"n": 0}, "n 0"),
    ({"mu": 0}, "mu 0"),
    ({"temperature": -1}, "temperature"),
    ({"threshold": 0.9}, "'threshold'"),
    ({"early_commit": True}, "saber cannot be combined with early_commit: "),
    ({"eotp": "reference"}, "saber cannot be combined with eotp: "),
])
def test_option_errors_are_one_line(tiny, opts, needle):
    with pytest.raises(DllmError) as err:
        dllm.generate(tiny, [[5, 6]], policy="saber", gen_length=4, block_length=4, **opts)
    assert needle in str(err.value) and "\n" not in str(err.value)
