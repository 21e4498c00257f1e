"""Continuous batching (``dllm/batching.py``, ``denoise(slots=...)``): a finished row's slot takes the next prompt.

What is pinned:

* every prompt decodes token for token, and with as many forwards (``seq_nfe``) and full refreshes, as it does
  alone: every registered policy without a cache, lowconf / threshold / creditdecoding with every KV cache, Dream
  with the dual cache, temperature sampling with a seed per prompt, all on the shipped tiny models with synthetic
  prompts whose rows finish after different numbers of forwards (checked, so the refill really happens mid-call);
* on a scripted model whose rows need 1 to 8 forwards: the exact sequence of batched forwards (which prompt sits
  in which slot, refill in prompt order, lowest free slot first), the total NFE against static batches, and the
  per-row no-progress guard;
* which path each policy takes (spies on the engine's refill and static-batches fallback): every refilling
  policy refills a slot for each prompt beyond the first batch and saves batched forwards on the ragged rows;
  ``freedave`` and ``wino`` (pieces that wrap the cache manager) take the documented static-batches fallback;
* a cache manager that does not declare per-row state runs static batches (same tokens, no refill);
* options: one-line errors; the eval runner's records do not depend on ``continuous`` and it groups the samples
  into ``call_size`` calls; ``dllm eval --continuous/--no-continuous`` reach the runner, and without a flag it
  passes the model's default (static on a CPU, continuous when the loaded model reports CUDA).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_model import EOS, NEG, ScriptedLM

import dllm
from dllm.assets import ASSETS_DIR
from dllm.cache import make_cache
from dllm.engine import denoise
from dllm.errors import DllmError
from dllm.evals.synthetic import load_split
from dllm.samplers.registry import make_policy, make_schedule

GEN, BLOCK, STEPS = 16, 4, 12  # four blocks, three steps each: caches refresh and reuse across block boundaries
BATCH = 4
EARLY = {"early_commit_thresholds": "15,12,10"}
POLICY_OPTIONS: dict[str, dict[str, Any]] = {
    "learnedfilter": {"filter_path": str(ASSETS_DIR / "tiny-llada-filter")},
    "earlycommit": dict(EARLY),
}
#: (id, policy, options): every registered policy, plus the modifiers every policy accepts (per-call state)
POLICY_CELLS = [(name, name, POLICY_OPTIONS.get(name, {})) for name in dllm.policies()] + [
    ("lowconf+eotp", "lowconf", {"eotp": "reference"}),
    ("creditdecoding+early_commit", "creditdecoding", {"early_commit": True, **EARLY}),
]
KV_CACHES = ("prefix", "dual", "delayed")


@pytest.fixture(scope="module")
def llada(tiny):
    return tiny


@pytest.fixture(scope="module")
def dream():
    return dllm.load_model("tiny-dream", device="cpu")


def _prompts(model, n_per_family: int = 2) -> list[list[int]]:
    return [dllm.encode_prompt(model, ex.prompt, chat=False) for ex in load_split("test", n_per_family=n_per_family)]


def _check_matches_alone(model, prompts, **kw) -> Any:
    """Continuous output == each prompt alone (tokens, seq_nfe, refreshes); returns the continuous output."""
    out = dllm.generate(model, prompts, batch_size=BATCH, continuous=True, **kw)
    assert out.tokens.shape == (len(prompts), kw.get("gen_length", GEN))
    for i, p in enumerate(prompts):
        alone = dllm.generate(model, [p], **kw)
        assert torch.equal(out.tokens[i], alone.tokens[0]), f"prompt {i} differs from its decode alone"
        assert out.seq_nfe[i] == alone.seq_nfe[0], f"prompt {i}: {out.seq_nfe[i]} forwards vs {alone.seq_nfe[0]} alone"
        for key in ("nfe", "refreshes"):
            if key in alone.cache_stats:
                assert out.cache_stats[key][i] == alone.cache_stats[key][0], (key, i)
        assert out.texts[i] == alone.texts[0]
    return out


#: policies whose pieces wrap the engine's cache manager (``wrap_cache``: FreeDave's drafts, WINO's shadows): the
#: wrapper's per-row state is unknown to the batching module, so ``continuous=True`` runs static batches
STATIC_FALLBACK = {"freedave", "wino"}


class _Spies:
    """Counts what the engine does with slots: prompts per static-batches fallback call, rows per refill."""

    def __init__(self, monkeypatch) -> None:
        import dllm.engine as engine

        self.fallbacks: list[int] = []
        self.refills: list[int] = []
        real_static, real_reset = engine._static_batches, engine.reset_policy_rows

        def static(model, prompts, *args, **kwargs):
            self.fallbacks.append(len(prompts))
            return real_static(model, prompts, *args, **kwargs)

        def reset(policy, state, rows):
            self.refills.append(int(rows.sum()))
            return real_reset(policy, state, rows)

        monkeypatch.setattr(engine, "_static_batches", static)
        monkeypatch.setattr(engine, "reset_policy_rows", reset)

    def clear(self) -> None:
        self.fallbacks.clear()
        self.refills.clear()


def test_the_static_fallback_policies_are_the_ones_that_wrap_the_manager():
    wrapping = {name for name in dllm.policies()
                if any(hasattr(piece, "wrap_cache") for piece in make_policy(name, **POLICY_OPTIONS.get(name, {})).pieces())}
    assert wrapping == STATIC_FALLBACK


@pytest.mark.parametrize("cell", POLICY_CELLS, ids=[c[0] for c in POLICY_CELLS])
def test_every_policy_matches_each_prompt_alone(llada, cell, monkeypatch):
    name, policy, opts = cell
    prompts = _prompts(llada)
    spies = _Spies(monkeypatch)
    out = _check_matches_alone(llada, prompts, policy=policy, gen_length=GEN, block_length=BLOCK, steps=STEPS, **opts)
    fallbacks, refills = list(spies.fallbacks), list(spies.refills)
    spies.clear()
    static = dllm.generate(llada, prompts, policy=policy, gen_length=GEN, block_length=BLOCK, steps=STEPS,
                           batch_size=BATCH, continuous=False, **opts)
    assert spies.refills == [] and spies.fallbacks == [len(prompts)]
    assert torch.equal(static.tokens, out.tokens) and static.seq_nfe == out.seq_nfe
    assert len(set(out.seq_nfe)) > 1, "rows should finish after different numbers of forwards"
    if policy in STATIC_FALLBACK:  # the documented fallback: static batches, no slot refilled, static's forwards
        assert fallbacks == [len(prompts)] and refills == [], name
        assert out.nfe == static.nfe
    else:  # 12 prompts, 4 slots: the other 8 each join by refilling a freed slot, no static batch
        assert fallbacks == [] and sum(refills) == len(prompts) - BATCH, name
        # a refilled slot no longer waits for its batch's slowest row: on these ragged rows every cell saves forwards
        assert out.nfe < static.nfe, name


@pytest.mark.parametrize("cache", KV_CACHES)
@pytest.mark.parametrize("policy", ["lowconf", "threshold", "creditdecoding"])
def test_kv_caches_match_each_prompt_alone(llada, policy, cache):
    prompts = _prompts(llada)
    out = _check_matches_alone(llada, prompts, policy=policy, cache=cache, gen_length=GEN, block_length=BLOCK,
                               steps=STEPS)
    assert len(set(out.seq_nfe)) > 1, "rows should finish after different numbers of forwards"


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_dream_matches_each_prompt_alone(dream, cache):
    _check_matches_alone(dream, _prompts(dream), policy="threshold", cache=cache, gen_length=GEN,
                         block_length=BLOCK, steps=STEPS)


def test_sampling_uses_each_prompts_own_seed(llada):
    """Temperature sampling: the refilled slot draws from a generator seeded with its new prompt's seed."""
    prompts = _prompts(llada)
    seeds = list(range(100, 100 + len(prompts)))
    out = dllm.generate(llada, prompts, batch_size=BATCH, continuous=True, policy="threshold", temperature=1.0, seed=seeds,
                        gen_length=GEN, block_length=BLOCK, steps=STEPS)
    for i, p in enumerate(prompts):
        alone = dllm.generate(llada, [p], policy="threshold", temperature=1.0, seed=seeds[i], gen_length=GEN,
                              block_length=BLOCK, steps=STEPS)
        assert torch.equal(out.tokens[i], alone.tokens[0]), i


def test_the_workload_is_ragged_and_continuous_saves_forwards(llada):
    """The synthetic rows finish at different steps, so refilling their slots saves batched forwards (families
    interleaved: in benchmark order the slow family fills the last batch alone and there is little to save)."""
    prompts = _prompts(llada, 4)
    prompts = [prompts[f * 4 + k] for k in range(4) for f in range(len(prompts) // 4)]
    kw = dict(policy="threshold", gen_length=GEN, block_length=GEN, steps=GEN, batch_size=8)
    cont = dllm.generate(llada, prompts, continuous=True, **kw)
    static = dllm.generate(llada, prompts, continuous=False, **kw)
    assert dllm.generate(llada, prompts, **kw).nfe == static.nfe  # the CPU default is static batches
    assert len(set(cont.seq_nfe)) > 1
    assert cont.seq_nfe == static.seq_nfe and torch.equal(cont.tokens, static.tokens)
    assert cont.nfe < static.nfe
    assert cont.nfe >= -(-sum(cont.seq_nfe) // 8)  # at most 8 rows per forward


# --- a scripted model: rows that need 1 to 8 forwards ----------------------------------------------------------

SPEEDS = (8, 1, 2, 4, 8, 1, 3)  # tokens each prompt commits per forward, gen_length 8: NFE 1, 8, 4, 2, 1, 8, 3
SG = 8


def _speed_script(vocab: int = 16):
    def script(prompt: tuple, call: int, gen: torch.Tensor) -> torch.Tensor:
        speed = SPEEDS[prompt[0] - 5]
        out = torch.full((SG, vocab), NEG)
        for j in range(SG):
            token = 5 + (j + prompt[0]) % 10
            sure = j < (call + 1) * speed
            out[j, token] = 0.0
            out[j, EOS] = NEG if sure else -0.1  # close runner-up below the threshold until it is this row's turn
        return out

    return script


def _scripted() -> tuple[ScriptedLM, list[list[int]]]:
    model = ScriptedLM(vocab_size=16, gen_length=SG, script=_speed_script())
    # distinct prompts of different lengths (left padding differs between slots)
    prompts = [[5 + k] + [6] * (k % 3) for k in range(len(SPEEDS))]
    return model, prompts


class _Log:
    """Records the prompts (by first token) of every batched forward, in row (= slot) order."""

    def __init__(self, model: ScriptedLM) -> None:
        self.calls: list[list[int]] = []
        real = model.forward

        def forward(input_ids, position_ids=None, key_mask=None, kv_hook=None, logits_index=None):
            self.calls.append([int(row[km][0]) - 5 for row, km in zip(input_ids, key_mask)])
            return real(input_ids, position_ids, key_mask, kv_hook, logits_index)

        model.forward = forward


def _run(model, prompts, **kw):
    kw.setdefault("continuous", True)
    return dllm.generate(model, prompts, policy="threshold", threshold=0.9, gen_length=SG, block_length=SG, steps=SG,
                         stop_at_eos=False, **kw)


def test_scripted_rows_match_alone_and_finish_at_different_times():
    model, prompts = _scripted()
    out = _run(model, prompts, batch_size=2)
    assert out.seq_nfe == [8 // s + (8 % s > 0) for s in SPEEDS] == [1, 8, 4, 2, 1, 8, 3]
    for i, p in enumerate(prompts):
        model.reset()
        alone = _run(model, [p])
        assert torch.equal(out.tokens[i], alone.tokens[0]) and alone.seq_nfe == [out.seq_nfe[i]]


def test_slots_are_refilled_in_prompt_order_lowest_slot_first():
    model, prompts = _scripted()
    log = _Log(model)
    out = _run(model, prompts, batch_size=2)
    expected = ([[0, 1]] + [[2, 1]] * 4 + [[3, 1]] * 2 + [[4, 1]]  # 0 ends at once, 2 needs 4, 3 needs 2
                + [[5, 6]] * 3  # 4 and 1 end together: slot 0 takes 5, slot 1 takes 6
                + [[5]] * 5)  # the queue is empty; slot 1 stays free
    assert log.calls == expected
    assert out.nfe == len(expected) == 16 and out.steps == 16
    assert sum(out.seq_nfe) == sum(len(c) for c in log.calls)


def test_total_nfe_against_static_batches():
    model, prompts = _scripted()
    log = _Log(model)
    static = _run(model, prompts, batch_size=2, continuous=False)
    assert static.nfe == len(log.calls) == 8 + 4 + 8 + 3  # each batch lasts as long as its slowest row
    assert static.seq_nfe == [1, 8, 4, 2, 1, 8, 3]
    model.reset()
    assert _run(model, prompts, batch_size=2).nfe == 16
    model.reset()
    one = _run(model, prompts)  # all prompts in one batch: the slowest row sets the count
    assert one.nfe == 8 and one.seq_nfe == static.seq_nfe and torch.equal(one.tokens, static.tokens)


def test_the_no_progress_guard_counts_each_rows_own_steps():
    """16 iterations in all, at most 8 per row: a per-row bound of 8 passes, a policy that never commits fails."""
    model, prompts = _scripted()
    pol = make_policy("threshold", threshold=0.9)
    sched = make_schedule("fixed", SG, SG, SG)

    def factory(km, pos, gs, ge):
        return make_cache("none", model, km, pos, gs, ge)

    out = denoise(model, prompts, pol, sched, factory, SG, stop_at_eos=False, max_iterations=8, slots=2)
    assert out.steps == 16
    model.reset()
    stuck = make_policy("threshold", threshold=0.9)
    stuck.selector = lambda proposal, ctx, state: torch.zeros_like(ctx.candidates)  # never commits
    with pytest.raises(RuntimeError, match="made no progress"):
        denoise(model, prompts, stuck, sched, factory, SG, stop_at_eos=False, max_iterations=8, slots=2)


def test_a_cache_without_declared_row_state_runs_static_batches():
    from dllm.cache import CACHES, CacheManager
    from dllm.cache.base import scatter_rows

    class OpaqueCache(CacheManager):  # per-row state unknown to the batching module
        name = "opaque-test"

        def _window_logits(self, canvas, active, block_start, block_end, window):
            return scatter_rows(self.full_forward(canvas, active, window), active, canvas.shape[0])

    CACHES.add("opaque-test", "test only", OpaqueCache)
    try:
        model, prompts = _scripted()
        out = _run(model, prompts, batch_size=2, cache="opaque-test")
        assert out.nfe == 23 and out.seq_nfe == [1, 8, 4, 2, 1, 8, 3]  # static batches: no refill
        OpaqueCache.refills_rows = True  # a manager that declares its state batch-first gets refills
        model.reset()
        assert _run(model, prompts, batch_size=2, cache="opaque-test").nfe == 16
    finally:
        CACHES.remove("opaque-test")


# --- options and the eval runner ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, phrase", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": 1.5}, "batch_size must be a positive integer, got 1.5"),
    ({"batch_size": 2, "continuous": "yes"}, "continuous must be true or false, got 'yes'"),
    ({"batch_size": 2, "trace": True}, "trace=True records one batch"),
])
def test_bad_options_are_one_line_errors(kw, phrase):
    model, prompts = _scripted()
    with pytest.raises(DllmError) as info:
        _run(model, prompts, **kw)
    assert phrase in str(info.value) and "\n" not in str(info.value)


def test_trace_is_kept_when_the_prompts_fit_in_one_batch():
    model, prompts = _scripted()
    out = _run(model, prompts, batch_size=len(prompts), trace=True)
    assert out.trace is not None and len(out.trace.steps) == 8


def test_runner_records_do_not_depend_on_continuous(llada, tmp_path, monkeypatch):
    from dllm.evals import runner

    sizes = []
    real = dllm.api.generate

    def spy(model, prompts, **kw):
        sizes.append((len(prompts), kw["batch_size"], kw["continuous"]))
        return real(model, prompts, **kw)

    monkeypatch.setattr(dllm.api, "generate", spy)
    monkeypatch.setattr(runner, "CONTINUOUS_BATCHES", 2)
    recs = {}
    for cont in (True, False):
        sizes.clear()
        s = runner.evaluate(llada, "synthetic", "threshold", {}, limit=2, batch_size=3, continuous=cont,
                            out_dir=tmp_path / str(cont), progress=False, warmup=False)
        assert s["n"] == 12
        assert sizes == ([(6, 3, True)] * 2 if cont else [(3, 3, False)] * 4)
        lines = Path(s["records"]).read_text().splitlines()[1:]
        recs[cont] = [{k: v for k, v in json.loads(line).items() if k != "latency_s"} for line in lines]
    assert recs[True] == recs[False]
    assert runner.call_size(16, True) == 16 * runner.CONTINUOUS_BATCHES and runner.call_size(16, False) == 16


def _cli_continuous(monkeypatch, tmp_path, capsys, cases) -> None:
    """Run ``dllm eval`` with each (flag, expected continuous) case and check what the runner received."""
    from dllm.cli.app import main
    from dllm.evals import runner

    seen = []
    real = runner.evaluate

    def spy(*args, **kw):
        seen.append(kw["continuous"])
        return real(*args, **kw)

    monkeypatch.setattr(runner, "evaluate", spy)
    for flag, want in cases:
        seen.clear()
        args = ["eval", "--bench", "synthetic", "--policy", "threshold", "--limit", "1", "--no-baseline",
                "--no-progress", "--batch-size", "4", "--out", str(tmp_path / str(flag))] + ([flag] if flag else [])
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr().err
        assert seen and set(seen) == {want}, flag


def test_cli_flag_reaches_the_runner(monkeypatch, tmp_path, capsys):
    _cli_continuous(monkeypatch, tmp_path, capsys,
                    (("--no-continuous", False), ("--continuous", True), (None, False)))  # CPU default: static


def test_cli_default_on_cuda_is_continuous(monkeypatch, tmp_path, capsys):
    """The CLI asks ``default_continuous`` about the model it loaded; here that model reports a CUDA device (the
    decode itself stays on the CPU), so the runner gets ``continuous=True`` unless ``--no-continuous``."""
    from types import SimpleNamespace

    import dllm.api

    asked = []
    real = dllm.api.default_continuous

    def as_if_cuda(model):
        asked.append(model)
        assert real(model) is False  # the loaded model really is on the CPU
        return real(SimpleNamespace(device=torch.device("cuda")))

    monkeypatch.setattr(dllm.api, "default_continuous", as_if_cuda)
    _cli_continuous(monkeypatch, tmp_path, capsys, ((None, True), ("--no-continuous", False)))
    assert len(asked) == 1 and isinstance(asked[0], dllm.DiffusionLM)  # only the flagless run asks; with the loaded model


def test_default_is_continuous_on_cuda_and_static_on_a_cpu(llada):
    from types import SimpleNamespace

    from dllm.api import default_continuous

    assert default_continuous(llada) is False
    assert default_continuous(SimpleNamespace(device=SimpleNamespace(type="cuda"))) is True


# --- scripts/check_continuous.py (the GPU session's continuous-vs-static check) ------------------------------------

def _check_script():
    from fake_model import load_repo_script

    return load_repo_script("scripts/check_continuous.py", "check_continuous")


def test_the_device_check_reports_a_difference(llada, monkeypatch):
    """The check says identical on the tiny model's ragged rows, and names the prompts when continuous decodes them
    differently (here a patched generate changes prompt 2's last token and prompt 5's NFE in continuous mode)."""
    check = _check_script()
    prompts = _prompts(llada)
    kw = dict(policy="threshold", gen_length=GEN, block_length=BLOCK, steps=STEPS)
    cell = check.compare(llada, prompts, BATCH, **kw)
    assert cell["identical"] and cell["differing_prompts"] == [] and cell["static_repeat_identical"] and cell["ragged"]
    assert cell["continuous_forwards"] < cell["static_forwards"]
    assert check.compare_alone(llada, prompts, cell["_continuous"], **kw) == []
    real = dllm.generate

    def skewed(model, prompts, **kw):
        out = real(model, prompts, **kw)
        if kw.get("continuous"):
            out.tokens[2, -1] += 1
            out.seq_nfe[5] += 1
        return out

    monkeypatch.setattr(dllm, "generate", skewed)
    cell = check.compare(llada, prompts, BATCH, **kw)
    assert not cell["identical"] and cell["differing"] == 2 and cell["differing_prompts"] == [2, 5]
    monkeypatch.undo()
    assert check.compare_alone(llada, prompts, cell["_continuous"], **kw) == [2, 5]
