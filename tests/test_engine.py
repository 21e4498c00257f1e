"""Golden tests for the denoising loop: NFE and trace accounting, EOS early stop, user errors.

The properties checked here follow from docs/design.md (*One generate call*, *Conventions*) and the public
contract of ``dllm.generate``: one trace step per model forward, every generated position committed exactly
once, in block order, with the token the policy proposed at that step; ``seq_nfe`` counts the forwards each row
took part in; with ``stop_at_eos`` a row ends once an end token is decided and everything before it is decided,
the rest is EOS, it costs fewer forwards and its text does not change; user mistakes are one-line ``DllmError``s.
"""

from __future__ import annotations

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.models.tiny import make_tiny_model, sharpen

PROMPT = [1, 17, 99, 5, 200, 42]
RAGGED = [[1, 17, 99], [1, 30, 31, 32, 33, 34, 35, 36], [1, 200, 201, 202, 203]]


@pytest.fixture(scope="module")
def models():
    return {
        "llada": sharpen(make_tiny_model("llada", seed=3, dtype=torch.float64)),
        "dream": sharpen(make_tiny_model("dream", seed=3, dtype=torch.float64, kv_heads=2)),
    }


# ------------------------------------------------------------------------------------------------------
# NFE and trace accounting
# ------------------------------------------------------------------------------------------------------

CASES = [  # (kind, policy, options, gen_length, block_length, steps)
    ("llada", "lowconf", {}, 24, 8, 12),
    ("llada", "threshold", {"threshold": 0.7}, 24, 8, 3),
    ("llada", "factor", {"factor": 1.0}, 24, 12, 2),
    ("dream", "random", {}, 16, 8, 16),
    ("dream", "maskgit_plus", {}, 16, 16, 8),
    ("dream", "threshold", {"threshold": 0.5}, 24, 8, 3),
]


@pytest.mark.parametrize("kind,policy,opts,G,K,S", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_trace_and_nfe_accounting(models, kind, policy, opts, G, K, S):
    model = models[kind]
    out = dllm.generate(model, RAGGED, policy=policy, gen_length=G, block_length=K, steps=S, stop_at_eos=False,
                        trace=True, **opts)
    trace = out.trace
    B = len(RAGGED)
    lp = max(len(p) for p in RAGGED)
    assert out.tokens.shape == (B, G)
    assert (out.tokens != model.special.mask).all()
    assert trace.gen_start == lp and trace.gen_length == G
    # one trace step per forward, numbered 0..nfe-1
    assert len(trace.steps) == out.nfe == out.steps
    assert [s.step for s in trace.steps] == list(range(out.nfe))
    # per-row forwards: the steps the row was active in
    assert out.seq_nfe == [int(sum(bool(s.active[b]) for s in trace.steps)) for b in range(B)]
    assert out.nfe == max(out.seq_nfe)

    commits = torch.zeros(B, G, dtype=torch.long)
    commit_at = trace.commit_step()
    for s in trace.steps:
        c = trace.to_generation_coords(s.committed, s.window_start, False)
        cand = trace.to_generation_coords(s.candidates, s.window_start, False)
        proposed = trace.to_generation_coords(s.proposed, s.window_start, -1)
        conf = trace.to_generation_coords(s.confidence, s.window_start, float("-inf"))
        # outside the generated region nothing is committed
        lo = s.window_start - trace.gen_start
        if lo < 0:
            assert not s.committed[:, :-lo].any()
        assert not (c & ~cand).any(), "committed a non-candidate"
        assert not c[~s.active].any(), "an inactive row committed"
        # candidates lie in each row's current block
        cols = torch.arange(G) + lp
        in_block = (cols >= s.block_start[:, None]) & (cols < s.block_end[:, None])
        assert not (cand & ~in_block).any()
        assert torch.isfinite(conf[cand]).all()
        assert torch.isneginf(conf[~cand]).all()
        # the committed token is the one proposed at that step
        assert torch.equal(out.tokens[c], proposed[c])
        assert (commit_at[c] == s.step).all()
        commits += c.long()
    assert (commits == 1).all(), "every generated position is committed exactly once"
    assert (commit_at >= 0).all()
    # blocks are decoded in order: every position of block k before any position of block k+1
    for b in range(B):
        for k in range(G // K - 1):
            assert commit_at[b, k * K:(k + 1) * K].max() < commit_at[b, (k + 1) * K:(k + 2) * K].min()
    # single-row NFE equals that row's seq_nfe
    for b, p in enumerate(RAGGED):
        one = dllm.generate(model, [p], policy=policy, gen_length=G, block_length=K, steps=S, stop_at_eos=False, **opts)
        assert one.nfe == out.seq_nfe[b]


def test_quota_nfe_formula_and_no_trace_by_default(models):
    # LLaDA quota decoding costs min(S_b, K) forwards per block (zero-quota steps are skipped, docs/methods.md#llada)
    for G, K, S in [(16, 8, 16), (16, 8, 4), (16, 8, 32), (16, 16, 40)]:
        out = dllm.generate(models["llada"], [PROMPT], policy="lowconf", gen_length=G, block_length=K, steps=S,
                            stop_at_eos=False)
        assert out.nfe == (G // K) * min(S // (G // K), K)
        assert out.trace is None
        assert out.texts is not None and len(out.texts) == 1


def test_parallel_policy_really_commits_several_tokens_per_step(models):
    out = dllm.generate(models["llada"], [PROMPT], policy="threshold", threshold=0.5, gen_length=32, block_length=32,
                        steps=1, stop_at_eos=False, trace=True)
    per_step = [int(s.committed.sum()) for s in out.trace.steps]
    assert sum(per_step) == 32 and len(per_step) == out.nfe < 16 and max(per_step) >= 4
    assert out.tokens_per_forward == pytest.approx(sum(out.generated_counts()) / out.nfe)


# ------------------------------------------------------------------------------------------------------
# EOS early stop
# ------------------------------------------------------------------------------------------------------

def with_end_token_at(model, position: int, token: int, strength: float = 40.0):
    """Make ``model`` strongly predict ``token`` at canvas (RoPE) position ``position``: a bias on the output
    head's row for that token at that position (at position-1 for Dream, whose outputs predict the next slot)."""
    source = position - 1 if model.logit_shift else position
    inner = model.forward

    def forward(input_ids, position_ids=None, key_mask=None, kv_hook=None, logits_index=None):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        logits = inner(input_ids, position_ids, key_mask, kv_hook, None).clone()
        logits[..., token] += strength * (position_ids == source).to(logits.dtype)
        if logits_index is None:
            return logits
        if isinstance(logits_index, slice):
            return logits[:, logits_index]
        return torch.gather(logits, 1, logits_index[..., None].expand(-1, -1, logits.shape[-1]))

    model.forward = forward
    return model


EOS_CASES = [("llada", "lowconf", {}, 8, 32), ("llada", "threshold", {"threshold": 0.9}, 8, 4),
             ("dream", "maskgit_plus", {}, 32, 32), ("dream", "lowconf", {}, 8, 32)]


@pytest.mark.parametrize("kind,policy,opts,K,S", EOS_CASES, ids=[f"{c[0]}-{c[1]}" for c in EOS_CASES])
@pytest.mark.parametrize("end", ["eos", "eot"])
def test_eos_early_stop(kind, policy, opts, K, S, end):
    model = sharpen(make_tiny_model(kind, seed=3, dtype=torch.float64, kv_heads=2), head=20.0)
    end_id = getattr(model.special, end)
    at = 12  # generated offset of the end token
    with_end_token_at(model, len(PROMPT) + at, end_id)
    G = 32
    kw = dict(policy=policy, gen_length=G, block_length=K, steps=S, trace=True, **opts)
    full = dllm.generate(model, [PROMPT], stop_at_eos=False, **kw)
    stop = dllm.generate(model, [PROMPT], stop_at_eos=True, **kw)
    full_row, stop_row = full.tokens[0].tolist(), stop.tokens[0].tolist()
    assert full_row[at] == end_id and end_id not in full_row[:at], full_row  # the construction works
    assert stop_row[:at + 1] == full_row[:at + 1]
    never = stop.trace.commit_step()[0] < 0
    assert never.any() and not never[:at + 1].any()
    assert all(t == model.special.eos for t, n in zip(stop_row, never.tolist()) if n)  # undecided -> EOS
    assert stop.nfe < full.nfe and stop.seq_nfe == [stop.nfe]
    assert stop.texts == full.texts and stop.texts[0].strip()
    assert stop.generated_counts() == full.generated_counts() == [at]
    # it stopped as soon as everything up to the end token was decided, not later
    decided_at = stop.trace.commit_step()[0, :at + 1]
    assert (decided_at >= 0).all() and int(decided_at.max()) == stop.nfe - 1
    assert (stop.trace.commit_step()[0] < stop.nfe).all()


def test_tokens_after_the_end_token_are_all_eos():
    model = sharpen(make_tiny_model("llada", seed=3, dtype=torch.float64), head=20.0)
    with_end_token_at(model, len(PROMPT) + 12, model.special.eos)
    out = dllm.generate(model, [PROMPT], policy="lowconf", gen_length=32, block_length=8, steps=32, stop_at_eos=True)
    row = out.tokens[0].tolist()
    assert row[12] == model.special.eos
    assert row[13:] == [model.special.eos] * 19, row


def test_eos_early_stop_in_a_batch_matches_single_rows():
    model = sharpen(make_tiny_model("llada", seed=3, dtype=torch.float64), head=20.0)
    with_end_token_at(model, 14, model.special.eos)  # RoPE position 14: a different generated offset per row
    kw = {"policy": "lowconf", "gen_length": 24, "block_length": 8, "steps": 24, "stop_at_eos": True}
    batch = dllm.generate(model, RAGGED, **kw)
    singles = [dllm.generate(model, [p], **kw) for p in RAGGED]
    for b, one in enumerate(singles):
        assert batch.tokens[b].tolist() == one.tokens[0].tolist()
        assert batch.seq_nfe[b] == one.nfe
        assert batch.texts[b] == one.texts[0]
    assert len(set(batch.seq_nfe)) > 1 and max(batch.seq_nfe) < 24
    assert batch.nfe == max(batch.seq_nfe)


# ------------------------------------------------------------------------------------------------------
# User errors
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    return make_tiny_model("llada", seed=0, max_length=64, tokenizer=False)


def _error(model, prompt=PROMPT, **kw) -> str:
    kw.setdefault("gen_length", 8)
    with pytest.raises(DllmError) as info:
        dllm.generate(model, [prompt] if prompt and isinstance(prompt[0], int) else prompt, **kw)
    msg = str(info.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


def test_unknown_policy_lists_valid_ones(small):
    msg = _error(small, policy="no-such-policy")
    assert "no-such-policy" in msg
    for name in dllm.policies():
        assert name in msg


@pytest.mark.parametrize("tau", [0, 0.0, 1.5, -1, float("nan")])
def test_threshold_outside_unit_interval(small, tau):
    msg = _error(small, policy="threshold", threshold=tau)
    assert "threshold" in msg


def test_threshold_one_is_allowed(small):
    assert dllm.generate(small, [PROMPT], policy="threshold", threshold=1.0, gen_length=8).tokens.shape == (1, 8)


def test_gen_length_not_multiple_of_block_length(small):
    msg = _error(small, gen_length=30, block_length=8)
    assert "30" in msg and "8" in msg


@pytest.mark.parametrize("steps", [6, 3, 1])
def test_steps_not_dividing_the_blocks(small, steps):
    msg = _error(small, gen_length=32, block_length=8, steps=steps)
    assert f"steps {steps} must be a positive multiple of the number of blocks 4" in msg, msg


def test_prompt_longer_than_the_model_allows(small):
    assert small.max_length == 64
    ok = dllm.generate(small, [[1] + [9] * 55], gen_length=8, block_length=8)  # 56 + 8 = 64 fits exactly
    assert ok.tokens.shape == (1, 8)
    msg = _error(small, [1] + [9] * 56, gen_length=8, block_length=8)
    assert "64" in msg


def test_unknown_option(small):
    msg = _error(small, policy="lowconf", thresold=0.9)
    assert "thresold" in msg
    msg = _error(small, policy="lowconf", threshold=0.9)  # a real option, but not of this policy
    assert "threshold" in msg


@pytest.mark.parametrize("prompt", [[[]], [], [[1, 2], []]], ids=["empty-row", "no-rows", "one-empty-row"])
def test_empty_prompt(small, prompt):
    _error(small, prompt)


def test_empty_prompt_tensor(small):
    with pytest.raises(DllmError):
        dllm.generate(small, torch.zeros(1, 0, dtype=torch.long), gen_length=8)


def test_prompt_containing_the_mask_id(small):
    msg = _error(small, [1, 17, small.special.mask, 5])
    assert str(small.special.mask) in msg


@pytest.mark.parametrize("kw", [{"gen_length": 0}, {"gen_length": -8}, {"steps": 0}, {"block_length": 0},
                                {"policy": "factor", "factor": 0}, {"policy": "lowconf", "temperature": -1.0}],
                         ids=["gen0", "gen-neg", "steps0", "block0", "factor0", "temp-neg"])
def test_other_bad_numbers(small, kw):
    _error(small, **kw)


def test_token_outside_vocabulary(small):
    msg = _error(small, [1, small.vocab_size + 5])
    assert str(small.vocab_size + 5) in msg


def test_seed_list_must_match_the_batch(small):
    msg = _error(small, [[1, 2], [1, 3]], seed=[1, 2, 3])
    assert "3" in msg and "2" in msg
