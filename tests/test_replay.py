"""The replay count (``dllm.samplers.oracle.replay_policy``): the fewest forwards that reproduce the
one-token-per-step output.

At each forward it commits every undecided block position whose argmax equals the reference's output there;
when none does it commits, with its reference token, the candidate the reference committed earliest (the
counted fallback). Checked here: the text equals the reference's exactly, NFE <= the reference's, and every
commit is the model's argmax at commit time except the counted fallbacks (argmax re-read from the logits the
policy was given), on a scripted model (exact paths) and on the shipped tiny-llada with every cache.
"""

from __future__ import annotations

import pytest
import torch
from fake_model import EOS, MASK, NEG, ScriptedLM, content_script

import dllm
from dllm.errors import DllmError
from dllm.samplers.oracle import fallback_counts, replay_policy

V = 16
A, B, C, D, X, Y = 5, 6, 7, 8, 9, 10
M = MASK


def _logits(spec):
    """[G, V] logits from one (token, probability) per position; the rest of the mass spread evenly."""
    out = torch.full((len(spec), V), NEG)
    for i, (tok, p) in enumerate(spec):
        others = [t for t in range(V) if t not in (tok, MASK)]
        out[i, others] = torch.log(torch.tensor((1 - p) / len(others)))
        out[i, tok] = torch.log(torch.tensor(p))
    return out


# Row "order" (prompt (11,)): targets A B C D. The reference commits D, C, B, A (one per forward). The replay's
# first forward matches B and D; in the new state [M, B, M, D] nothing matches (X .9 at 0, Y .5 at 2), so the
# fallback commits position 2 (committed earliest by the reference), not position 0 (the most confident).
ORDER = {
    (M, M, M, M): [(X, .5), (B, .8), (Y, .3), (D, .9)],
    (M, M, M, D): [(X, .5), (Y, .4), (C, .9), (D, 1.)],
    (M, M, C, D): [(A, .5), (B, .9), (C, 1.), (D, 1.)],
    (M, B, C, D): [(A, .9), (B, 1.), (C, 1.), (D, 1.)],
    (M, B, M, D): [(X, .9), (B, 1.), (Y, .5), (D, 1.)],
}
# Row "tail" (prompt (12,)): the reference commits EOS at 1, then A at 0, and stops; 2 and 3 are EOS fill. The
# replay's first forward also predicts EOS at 2, a position the reference never decoded: committing it would lead
# to [M, EOS, EOS, M] and a third forward (B at 0, EOS at 3), so fill positions are no targets.
TAIL = {
    (M, M, M, M): [(B, .5), (EOS, .9), (EOS, .6), (C, .3)],
    (M, EOS, M, M): [(A, .9), (EOS, 1.), (C, .4), (C, .4)],
    (M, EOS, EOS, M): [(B, .9), (EOS, 1.), (EOS, 1.), (EOS, .9)],
    (M, EOS, EOS, EOS): [(B, .9), (EOS, 1.), (EOS, 1.), (EOS, 1.)],
}
SCRIPTS = {(11,): ORDER, (12,): TAIL}


def _scripted():
    def script(prompt, call, gen):
        table = SCRIPTS[prompt]
        return _logits(table.get(tuple(gen.tolist()), [(Y, .3)] * 4))

    return ScriptedLM(V, 4, script)


class _ArgmaxRecorder:
    """Wraps the policy's scorer and keeps, per step, the argmax of the logits the policy was given."""

    def __init__(self, inner):
        self.inner = inner
        self.steps = []

    def __call__(self, logits, ctx):
        self.steps.append((ctx.window_start - ctx.gen_start, logits.argmax(-1).cpu()))
        return self.inner(logits, ctx)


def _replay(model, prompts, **kw):
    """(reference, replay output, per-row fallbacks, per-row commits that were not the argmax)."""
    g = kw.setdefault("gen_length", 4)
    ref = dllm.generate(model, prompts, policy="lowconf", steps=g, trace=True, **kw)
    pol = replay_policy(ref)
    rec = _ArgmaxRecorder(pol.scorer)
    pol.scorer = rec
    out = dllm.generate(model, prompts, policy=pol, trace=True, **kw)
    assert len(rec.steps) == len(out.trace.steps)
    not_argmax = [0] * len(prompts)
    for (off, am), s in zip(rec.steps, out.trace.steps):
        for r, j in s.committed.nonzero().tolist():
            if int(out.tokens[r, off + j]) != int(am[r, j]):
                not_argmax[r] += 1
    return ref, out, fallback_counts(pol), not_argmax


def test_scripted_paths_fallback_order_and_fill_positions():
    model = _scripted()
    ref, out, fallbacks, not_argmax = _replay(model, [[11], [12]], block_length=4)
    assert ref.tokens.tolist() == [[A, B, C, D], [A, EOS, EOS, EOS]]
    assert ref.trace.commit_step().tolist() == [[3, 2, 1, 0], [1, 0, -1, -1]] and ref.seq_nfe == [4, 2]
    assert out.tokens.tolist() == ref.tokens.tolist() and out.texts == ref.texts
    # order: {1, 3} matched, then the fallback at 2, then 0 matched; tail: 1 matched, then 0 matched
    assert out.trace.commit_step().tolist() == [[2, 0, 1, 0], [1, 0, -1, -1]]
    assert out.seq_nfe == [3, 2] and fallbacks == [1, 0] and not_argmax == fallbacks


def test_scripted_random_model_every_block_layout():
    """Content-dependent random logits: fallbacks fire often; text, NFE and argmax rules hold throughout."""
    model = ScriptedLM(V, 12, content_script(V, seed=3, sharpness=2.0, eos_after=8))
    prompts = [[5 + i % 7, 6, 7 + i % 3] for i in range(10)]
    total_fallbacks = 0
    for block, stop in ((12, True), (4, True), (3, False)):
        ref, out, fallbacks, not_argmax = _replay(model, prompts, gen_length=12, block_length=block, stop_at_eos=stop)
        assert out.texts == ref.texts and out.tokens.tolist() == ref.tokens.tolist()
        assert all(a <= b for a, b in zip(out.seq_nfe, ref.seq_nfe)), (out.seq_nfe, ref.seq_nfe)
        assert not_argmax == fallbacks
        total_fallbacks += sum(fallbacks)
        assert sum(out.seq_nfe) < sum(ref.seq_nfe)
    assert total_fallbacks > 0  # the fallback path ran


@pytest.mark.parametrize("cache", ["none", "prefix", "dual", "delayed"])
def test_tiny_llada_every_cache(tiny, cache):
    from dllm.evals.synthetic import load_split

    prompts = [ex.prompt for ex in load_split("test", n_per_family=3)]
    for block in (16, 4):
        ref, out, fallbacks, not_argmax = _replay(tiny, prompts, gen_length=16, block_length=block, cache=cache)
        assert out.texts == ref.texts and out.tokens.tolist() == ref.tokens.tolist()
        assert all(a <= b for a, b in zip(out.seq_nfe, ref.seq_nfe)), (out.seq_nfe, ref.seq_nfe)
        assert not_argmax == fallbacks
        assert sum(out.seq_nfe) < sum(ref.seq_nfe) / 2  # the tiny model's answers come in a few forwards


def test_replay_needs_a_traced_one_token_per_step_reference():
    model = _scripted()
    with pytest.raises(DllmError, match="trace=True"):
        replay_policy(dllm.generate(model, [[11]], policy="lowconf", gen_length=4, steps=4))
    two = dllm.generate(model, [[11]], policy="lowconf", gen_length=4, steps=2, trace=True)
    with pytest.raises(DllmError, match="one-token-per-step"):
        replay_policy(two)
    ref = dllm.generate(model, [[11]], policy="lowconf", gen_length=4, steps=4, trace=True)
    with pytest.raises(DllmError, match="rows"):
        dllm.generate(model, [[11], [12]], policy=replay_policy(ref), gen_length=4)
