"""Every policy x every KV cache x both block schedules, end to end on the shipped tiny LLaDA model.

The unit tests run each piece alone or beside one or two others; this matrix runs every combination
through ``dllm.generate`` in a setting where each mechanism acts (``test_the_setting_exercises_every_mechanism``
checks that it does, so the matrix cannot pass by doing nothing):

* a 16-token answer region in 4-token blocks, decoded to the end (``stop_at_eos=False``), so every row opens
  four fixed blocks and the caches are refreshed and reused across every block boundary;
* a ragged batch of two synthetic-task prompts whose rows finish after different numbers of forwards
  (threshold-style rules, early commit and EoTP end rows at different steps), so the caches also forward
  subsets of the batch;
* adaptive blocks that really adapt: the shipped model ends every answer with EOS and never predicts a
  newline (the default delimiter), so the adaptive schedule takes EOS as its delimiter with a look-ahead of
  half the answer region; blocks then run past ``block_length`` or shrink to one position;
* early commit with thresholds above the tiny model's first-step logit gap, so it fires mid-decode instead
  of on the first forward, with the answer window wider than the block.

Per cell: (a) the output is well formed (ids in the vocabulary, no mask left, at least one forward per row);
(b) each row of the ragged batch decodes token for token, and with as many forwards, as it does alone;
(c) a cache that takes ``refresh`` gives, with ``refresh=1`` (refresh on every step), exactly the tokens and
per-row forwards of ``cache="none"``. A smaller matrix (fixed blocks; threshold, early commit, EoTP) repeats
the three checks with ``stop_at_eos`` on (the default), where rows leave the batch once their answer is final.

Policies come from ``dllm.policies()`` and caches from ``dllm.caches()`` when the tests are collected, so a
newly registered policy or cache joins the matrix without an edit here.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import dllm
from dllm.assets import ASSETS_DIR, asset_path
from dllm.errors import DllmError

GEN, BLOCK, STEPS = 16, 4, 12  # 3 steps a block: delayed caches from step 2 (steps 0 and 1 are full forwards)
TEXTS = ("sort:8315=", "shuffle:6zrgm=")  # 10 and 14 tokens: a ragged batch
# above the first-step gap: Prophet fires after a few steps. The whole generation is monitored (decided or not):
# with the default answer positions 0:5 the shuffle row never fires (its answer gaps stay small)
EARLY = {"early_commit_thresholds": "15,12,10", "answer_region": "0:16"}

#: per-policy options that make the policy act here (every other policy runs with its defaults)
POLICY_OPTIONS: dict[str, dict[str, Any]] = {
    "learnedfilter": {"filter_path": str(ASSETS_DIR / "tiny-llada-filter")},  # the filter shipped for tiny-llada
    "earlycommit": dict(EARLY),
}
#: (cell id, policy name, options): every registered policy, plus the options every policy accepts on a base
POLICY_CELLS: list[tuple[str, str, dict[str, Any]]] = [
    (name, name, POLICY_OPTIONS.get(name, {})) for name in dllm.policies()
] + [
    ("lowconf+early_commit", "lowconf", {"early_commit": True, **EARLY}),
    ("lowconf+eotp_reference", "lowconf", {"eotp": "reference"}),
    ("creditdecoding+early_commit+eotp", "creditdecoding", {"early_commit": True, **EARLY, "eotp": "reference"}),
]
CACHES = tuple(dllm.caches())
SCHEDULES = ("fixed", "adaptive")

#: cells that expose a known engine/cache/policy bug -> reason; marked xfail(strict=True)
KNOWN_BUGS: dict[tuple[str, str, str, bool], str] = {}
#: (policy, cache) -> start of the one-line error with which the policy refuses the cache at its defaults; the
#: cell checks the error, then runs (a)-(c) with refresh=1
REFUSED: dict[tuple[str, str], str] = {("freedave", "delayed"): "freedave is lossless with cache none, prefix or dual"}


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is fastest on a shared machine
    yield dllm.load_model(asset_path("tiny-llada"), device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts(model) -> list[list[int]]:
    return [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]


def _generate(model, prompts, policy: str, opts: dict[str, Any], cache: str, schedule: str, stop_at_eos: bool,
              **extra):
    sched = {"delimiters": [model.special.eos], "window_fraction": 0.5} if schedule == "adaptive" else {}
    return dllm.generate(model, prompts, policy=policy, gen_length=GEN, block_length=BLOCK, steps=STEPS, cache=cache,
                         block_schedule=schedule, stop_at_eos=stop_at_eos, **sched, **opts, **extra)


_NO_CACHE: dict[tuple[str, str, bool], dllm.GenerationOutput] = {}
_TAKES_REFRESH: dict[str, bool] = {}


def _takes_refresh(model, prompts, cache: str) -> bool:
    """Whether ``dllm.generate`` accepts ``refresh`` for this cache (a refusal must be the one-line option error)."""
    if cache not in _TAKES_REFRESH:
        try:
            dllm.generate(model, prompts[:1], gen_length=BLOCK, block_length=BLOCK, cache=cache, refresh=1)
            _TAKES_REFRESH[cache] = True
        except DllmError as exc:
            assert "refresh" in str(exc) and "\n" not in str(exc), str(exc)
            _TAKES_REFRESH[cache] = False
    return _TAKES_REFRESH[cache]


def _check_cell(model, prompts, cell, policy, opts, cache, schedule, stop_at_eos):
    extra: dict[str, Any] = {}
    if (policy, cache) in REFUSED:
        with pytest.raises(DllmError, match=REFUSED[(policy, cache)]) as err:
            _generate(model, prompts, policy, opts, cache, schedule, stop_at_eos)
        assert "\n" not in str(err.value)
        extra = {"refresh": 1}
    out = _generate(model, prompts, policy, opts, cache, schedule, stop_at_eos, **extra)

    # (a) well formed
    assert out.tokens.shape == (len(prompts), GEN)
    assert ((out.tokens >= 0) & (out.tokens < model.vocab_size)).all()
    assert not (out.tokens == model.special.mask).any(), "a mask token was left in the output"
    assert len(out.seq_nfe) == len(prompts) and min(out.seq_nfe) >= 1 and out.nfe >= 1
    assert out.texts is not None and len(out.texts) == len(prompts)

    # (b) each row of the ragged batch == that prompt alone (tokens and forwards)
    for i, p in enumerate(prompts):
        one = _generate(model, [p], policy, opts, cache, schedule, stop_at_eos, **extra)
        assert out.tokens[i].tolist() == one.tokens[0].tolist(), f"row {i}: batch != single"
        assert out.seq_nfe[i] == one.seq_nfe[0], f"row {i}: batch NFE {out.seq_nfe[i]} != single {one.seq_nfe[0]}"

    # (c) refresh on every step is the no-cache path
    if cache != "none" and _takes_refresh(model, prompts, cache):
        key = (cell, schedule, stop_at_eos)
        if key not in _NO_CACHE:
            _NO_CACHE[key] = _generate(model, prompts, policy, opts, "none", schedule, stop_at_eos)
        ref = _NO_CACHE[key]
        fresh = _generate(model, prompts, policy, opts, cache, schedule, stop_at_eos, refresh=1)
        assert fresh.tokens.tolist() == ref.tokens.tolist(), "refresh=1 tokens != cache='none'"
        assert fresh.seq_nfe == ref.seq_nfe, f"refresh=1 NFE {fresh.seq_nfe} != cache='none' {ref.seq_nfe}"


def _cells(policy_cells, stop_at_eos: bool, schedules=SCHEDULES):
    for cell, policy, opts in policy_cells:
        for cache in CACHES:
            for schedule in schedules:
                reason = KNOWN_BUGS.get((cell, cache, schedule, stop_at_eos))
                marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
                yield pytest.param(cell, policy, opts, cache, schedule, id=f"{cell}-{cache}-{schedule}", marks=marks)


@pytest.mark.parametrize("cell,policy,opts,cache,schedule", list(_cells(POLICY_CELLS, False)))
def test_cell(model, prompts, cell, policy, opts, cache, schedule):
    _check_cell(model, prompts, cell, policy, opts, cache, schedule, stop_at_eos=False)


STOP_AT_EOS_CELLS = [c for c in POLICY_CELLS if c[0] in ("threshold", "lowconf+early_commit", "lowconf+eotp_reference")]


@pytest.mark.parametrize("cell,policy,opts,cache,schedule", list(_cells(STOP_AT_EOS_CELLS, True, ("fixed",))))
def test_cell_stop_at_eos(model, prompts, cell, policy, opts, cache, schedule):
    _check_cell(model, prompts, cell, policy, opts, cache, schedule, stop_at_eos=True)


def test_every_kv_cache_takes_refresh(model, prompts):
    """Check (c) runs for every cache that keeps K/V: only ``none`` refuses the option."""
    assert {c for c in CACHES if _takes_refresh(model, prompts, c)} == set(CACHES) - {"none"}


def _blocks(out, row: int) -> list[tuple[int, int]]:
    """The (start, end) of every block row ``row`` decoded, in generation coordinates."""
    gs = out.trace.gen_start
    seen = {(int(s.block_start[row]) - gs, int(s.block_end[row]) - gs) for s in out.trace.steps if s.active[row]}
    return sorted(seen)


def test_the_setting_exercises_every_mechanism(model, prompts):
    """Guards the matrix against passing vacuously: in this setting blocks change, adaptive blocks differ
    from fixed ones, the caches really reuse stale K/V, rows finish out of phase, and early commit and EoTP
    change when rows finish."""
    def run(policy, opts=None, cache="none", schedule="fixed"):
        return _generate(model, prompts, policy, opts or {}, cache, schedule, False, trace=True)

    base = run("lowconf")
    rows = range(len(prompts))
    assert base.seq_nfe == [STEPS] * len(prompts)  # the quota, all blocks decoded
    assert all(_blocks(base, r) == [(k, k + BLOCK) for k in range(0, GEN, BLOCK)] for r in rows)

    adaptive = run("lowconf", schedule="adaptive")
    layouts = [_blocks(adaptive, r) for r in rows]
    assert any(e - s > BLOCK for lay in layouts for s, e in lay), layouts  # a block past block_length
    assert any(e - s < BLOCK for lay in layouts for s, e in lay), layouts  # and a shorter one
    assert len({tuple(lay) for lay in layouts}) > 1, layouts  # rows of one batch get different blocks

    for cache in CACHES:
        if cache != "none":
            assert not torch.equal(run("lowconf", cache=cache).tokens, base.tokens), f"{cache} acted like no cache"

    assert len(set(run("threshold").seq_nfe)) > 1  # rows out of phase
    early = run("lowconf", {"early_commit": True, **EARLY}).seq_nfe
    assert 1 < max(early) < STEPS and len(set(early)) > 1, early  # fires mid-decode, at different steps per row
    eotp = run("lowconf", {"eotp": "reference"}).seq_nfe
    assert max(eotp) < STEPS, eotp
    learned = run("learnedfilter", POLICY_OPTIONS["learnedfilter"]).seq_nfe
    assert max(learned) < STEPS, learned  # the shipped filter accepts positions beyond the quota
