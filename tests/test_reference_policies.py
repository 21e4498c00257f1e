"""Golden tests: the baseline policies against straightforward re-derivations of the reference algorithms.

The references below are written from the documented reference behaviour (docs/methods.md#llada, #fast-dllm,
#dream), independently of the implementation, one sequence at a time, in plain Python over float64 logits,
deliberately *not* reusing any dllm sampler code:

* LLaDA ``generate`` (LL): per-block quota ``get_num_transfer_tokens``, exactly S_b iterations per block,
  ``low_confidence`` (softmax of the argmax) or ``random`` remasking, top-k per row;
* Fast-dLLM ``generate`` with ``get_transfer_index`` threshold mode (``{conf >= tau} U {argmax}``), and the
  factor rule of ``get_transfer_index_dynamic`` (the paper rule; the reference's off-by-one quirk is
  documented by a separate test);
* Dream ``diffusion_generate`` (non-block) with ``maskgit_plus`` / ``topk_margin`` / ``entropy`` and its
  float32 ``int(n * (1 - s/t))`` schedule.

Ties: torch.topk's tie order is unspecified in the references; dllm breaks ties by the lowest index, and so
do these references. To keep the comparison meaningful despite our float32 confidences vs the references'
float64, every reference records how close each decision was (gap between the last selected and the first
rejected confidence, distance to a threshold) and the tests require a comfortable margin.

Tiny random models have nearly flat, nearly equal confidences, so the models here are "sharpened" (body
weights x8, output head x50) so confidences spread over (0, 1) and thresholds select several tokens a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

import dllm
from dllm.models.base import SpecialTokens
from dllm.models.tiny import make_tiny_model, sharpen
from dllm.samplers.base import StepContext

MASK = 4  # tiny_config: mask_token_id
MARGIN = 2e-5  # float32 vs float64 confidences: decisions closer than this are ambiguous
PROMPT = [1, 17, 99, 5, 200, 42]


@pytest.fixture(scope="module")
def llada():
    return sharpen(make_tiny_model("llada", seed=3, dtype=torch.float64, tokenizer=False))


@pytest.fixture(scope="module")
def dream():
    return sharpen(make_tiny_model("dream", seed=3, dtype=torch.float64, kv_heads=2, tokenizer=False))


@pytest.fixture(scope="module")
def flat_llada():
    return make_tiny_model("llada", seed=1, dtype=torch.float64, tokenizer=False)


@pytest.fixture(scope="module")
def flat_dream():
    return make_tiny_model("dream", seed=1, dtype=torch.float64, kv_heads=2, tokenizer=False)


# ======================================================================================================
# Reference implementations (single sequence, plain Python decisions)
# ======================================================================================================

@dataclass
class RefRun:
    tokens: list[int]
    nfe: int  # forwards a reference that stops at block completion runs (zero-quota steps skipped)
    nfe_all: int  # forwards of the literal LLaDA loop (S_b per block, zero-quota steps included)
    commit_step: list[int]  # per generated position, the (effective) step that committed it
    per_step: list[int] = field(default_factory=list)  # tokens committed per executed step
    margin: float = math.inf  # smallest decision margin seen
    quirk_hits: int = 0  # factor: steps where the reference's off-by-one would have changed the count

    def note(self, gap: float) -> None:
        self.margin = min(self.margin, abs(gap))


def ref_logits(model, x: list[int]) -> torch.Tensor:
    """[L, V] float64 logits predicting each canvas position. Dream (docs/models.md#logit-shift): output i-1."""
    with torch.no_grad():
        raw = model(torch.tensor([x]))[0].double()
    if model.logit_shift:
        raw = torch.cat([raw[:1], raw[:-1]], 0)
    return raw


def argmax_first(row: torch.Tensor) -> int:
    best = row.max()
    return int((row == best).nonzero()[0, 0])


def order_desc(conf: dict[int, float]) -> list[int]:
    """Positions by confidence descending, lowest index first on ties."""
    return sorted(conf, key=lambda i: (-conf[i], i))


def top_k(conf: dict[int, float], k: int, run: RefRun) -> list[int]:
    order = order_desc(conf)
    if 0 < k < len(order):
        run.note(conf[order[k - 1]] - conf[order[k]])
    return order[:k]


def get_num_transfer_tokens(m: int, steps: int) -> list[int]:
    """Spec 3: base = m // S, the remainder front-loaded."""
    base, r = divmod(m, steps)
    return [base + (1 if i < r else 0) for i in range(steps)]


def probs_and_argmax(logits_row: torch.Tensor) -> tuple[int, torch.Tensor]:
    p = torch.softmax(logits_row.double(), -1)
    return argmax_first(logits_row), p


def ref_llada_quota(model, prompt, G, K, S, remasking="low_confidence", follow=None) -> RefRun:
    """LL ``generate`` at T = 0 (docs/methods.md#llada). ``follow(step, candidates) -> positions`` replaces the choice
    of positions (used for ``random`` remasking, whose uniform draws cannot be reproduced)."""
    assert G % K == 0 and S % (G // K) == 0
    lp = len(prompt)
    x = list(prompt) + [MASK] * G
    sb = S // (G // K)
    run = RefRun(tokens=[], nfe=0, nfe_all=0, commit_step=[-1] * G)
    for b in range(G // K):
        s, e = lp + b * K, lp + (b + 1) * K
        quota = get_num_transfer_tokens(sum(t == MASK for t in x[s:e]), sb)
        for i in range(sb):
            run.nfe_all += 1  # LL runs a forward every iteration, even with quota 0
            if quota[i] == 0:
                assert MASK not in x[s:e], "a zero quota can only happen once the block is complete"
                continue  # the forward would change nothing
            logits = ref_logits(model, x)
            cand = [j for j in range(lp + G) if x[j] == MASK and j < e]  # confidence -inf at and after e
            assert all(s <= j for j in cand)
            x0, conf = {}, {}
            for j in cand:
                tok, p = probs_and_argmax(logits[j])
                x0[j], conf[j] = tok, float(p[tok])
            chosen = top_k(conf, quota[i], run) if follow is None else follow(run.nfe, cand, quota[i])
            assert len(chosen) == quota[i] and set(chosen) <= set(cand)
            for j in chosen:
                x[j] = x0[j]
                run.commit_step[j - lp] = run.nfe
            run.per_step.append(len(chosen))
            run.nfe += 1
    run.tokens = x[lp:]
    assert MASK not in run.tokens
    return run


def ref_fastdllm(model, prompt, G, K, rule: str, tau: float = 0.9, factor: float = 1.0, quirk: bool = False) -> RefRun:
    """Fast-dLLM ``generate`` with ``get_transfer_index`` threshold or factor selection (docs/methods.md#fast-dllm):
    per block, forward + transfer until the block has no mask."""
    lp = len(prompt)
    x = list(prompt) + [MASK] * G
    run = RefRun(tokens=[], nfe=0, nfe_all=0, commit_step=[-1] * G)
    for b in range(G // K):
        s, e = lp + b * K, lp + (b + 1) * K
        while MASK in x[s:e]:
            logits = ref_logits(model, x)
            cand = [j for j in range(s, e) if x[j] == MASK]
            x0, conf = {}, {}
            for j in cand:
                tok, p = probs_and_argmax(logits[j])
                x0[j], conf[j] = tok, float(p[tok])  # float64 softmax as in FD
            order = order_desc(conf)
            if rule == "threshold":
                chosen = [order[0]] + [j for j in order[1:] if conf[j] >= tau]
                for j in order[1:]:
                    run.note(conf[j] - tau)
            else:
                n = len(order)
                count = n
                for r in range(n):
                    thr = -1.0 if r == 0 else 1.0 - factor / (r + 2)
                    if r:
                        run.note(conf[order[r]] - thr)
                    if conf[order[r]] < thr:
                        count = r
                        break
                if count == n - 1 and n > 1:
                    run.quirk_hits += 1
                    if quirk:
                        count = n  # FD-later's "if i == n-1: i += 1"
                chosen = order[:count]
            for j in chosen:
                x[j] = x0[j]
                run.commit_step[j - lp] = run.nfe
            run.per_step.append(len(chosen))
            run.nfe += 1
    run.nfe_all = run.nfe
    run.tokens = x[lp:]
    return run


def dream_transfer_counts(n: int, steps: int, eps: float = 1e-3) -> list[int]:
    """Dream's k per step for a fixed mask count trajectory (docs/methods.md#dream), float32 and truncation."""
    ts = torch.linspace(1, eps, steps + 1)
    counts, left = [], n
    for i in range(steps):
        k = left if i == steps - 1 else int(torch.tensor(float(left), dtype=torch.float32) * (1 - ts[i + 1] / ts[i]))
        counts.append(k)
        left -= k
    return counts


def ref_dream(model, prompt, G, S, alg: str, eps: float = 1e-3) -> RefRun:
    """Dream ``diffusion_generate`` (docs/methods.md#dream), non-block, temperature 0, B = 1."""
    lp = len(prompt)
    x = list(prompt) + [MASK] * G
    ts = torch.linspace(1, eps, S + 1)  # float32, as torch.linspace defaults to
    run = RefRun(tokens=[], nfe=0, nfe_all=0, commit_step=[-1] * G)
    for i in range(S):
        t, s = ts[i], ts[i + 1]
        logits = ref_logits(model, x)
        cand = [j for j in range(len(x)) if x[j] == MASK]
        x0, conf = {}, {}
        for j in cand:
            tok, p = probs_and_argmax(logits[j])
            x0[j] = tok
            if alg == "maskgit_plus":
                conf[j] = float(p[tok])
            elif alg == "topk_margin":
                top2 = sorted(p.tolist(), reverse=True)[:2]
                conf[j] = top2[0] - top2[1]
            else:  # entropy: sum p log(p + 1e-10), higher = more certain
                conf[j] = float((p * torch.log(p + 1e-10)).sum())
        n_mask = torch.tensor(float(len(cand)), dtype=torch.float32)
        k = int(n_mask * (1 - s / t)) if i < S - 1 else len(cand)
        for j in top_k(conf, k, run):
            x[j] = x0[j]
            run.commit_step[j - lp] = run.nfe
        run.per_step.append(k)
        run.nfe += 1
    run.nfe_all = run.nfe
    run.tokens = x[lp:]
    assert MASK not in run.tokens
    return run


# ======================================================================================================
# Self-checks of the references against the worked examples in docs/methods.md (#llada, #dream)
# ======================================================================================================

def test_reference_schedules_match_spec_examples():
    assert get_num_transfer_tokens(32, 5) == [7, 7, 6, 6, 6]
    assert get_num_transfer_tokens(10, 4) == [3, 3, 2, 2]
    assert get_num_transfer_tokens(3, 5) == [1, 1, 1, 0, 0]
    c = dream_transfer_counts(256, 256)
    assert c[0] == 0 and set(c[1:-1]) == {1} and c[-1] == 2
    c = dream_transfer_counts(64, 16)
    assert c[0] == 3 and set(c[1:-1]) == {4} and c[-1] == 5


# ======================================================================================================
# Token-for-token comparisons
# ======================================================================================================

def _ours(model, policy, G, K, S, prompt=PROMPT, **opts):
    return dllm.generate(model, [prompt], policy=policy, gen_length=G, block_length=K, steps=S, stop_at_eos=False,
                         trace=True, **opts)


def _check_against(out, ref: RefRun, G: int):
    assert ref.margin > MARGIN, f"near-tie {ref.margin:.2e} in the reference run; pick another seed/prompt"
    assert out.tokens[0].tolist() == ref.tokens
    assert out.nfe == ref.nfe == out.seq_nfe[0]
    assert out.trace.commit_step()[0].tolist() == ref.commit_step
    assert sorted(set(ref.commit_step)) == list(range(ref.nfe)) or 0 in ref.per_step


LLADA_SETTINGS = [  # (gen_length, block_length, steps)
    (32, 32, 32),  # one block, one token a step
    (32, 8, 32),  # semi-AR, one token a step
    (32, 8, 8),  # 4 tokens a step
    (24, 8, 12),  # 2 tokens a step
    (30, 10, 9),  # 4, 3, 3 per block: remainder front-loaded
    (16, 8, 32),  # S_b = 16 > K: zero-quota steps that LLaDA still runs and we skip
]


@pytest.mark.parametrize("G,K,S", LLADA_SETTINGS)
def test_lowconf_matches_llada_generate(llada, G, K, S):
    ref = ref_llada_quota(llada, PROMPT, G, K, S)
    out = _ours(llada, "lowconf", G, K, S)
    _check_against(out, ref, G)
    assert ref.nfe_all == S
    assert out.nfe == sum(min(S // (G // K), K) for _ in range(G // K))
    if S < G:
        assert max(ref.per_step) >= 2


def constant_logits(model):
    """Every position predicts the same distribution: all confidences tie exactly (in any precision)."""
    row = torch.linspace(-2.0, 3.0, model.vocab_size, dtype=model.dtype)

    def forward(input_ids, position_ids=None, key_mask=None, kv_hook=None, logits_index=None):
        logits = row.expand(input_ids.shape[0], input_ids.shape[1], -1).clone()
        return logits[:, logits_index] if isinstance(logits_index, slice) else logits

    model.forward = forward
    return model


@pytest.mark.parametrize("policy,G,K,S,opts", [("lowconf", 16, 8, 8, {}), ("lowconf", 12, 12, 5, {}),
                                               ("threshold", 16, 8, 2, {"threshold": 0.99}),
                                               ("maskgit_plus", 16, 16, 5, {})])
def test_exact_ties_go_to_the_lowest_index(policy, G, K, S, opts):
    model = constant_logits(make_tiny_model("llada", seed=0, dtype=torch.float64, tokenizer=False))
    if policy == "lowconf":
        ref = ref_llada_quota(model, PROMPT, G, K, S)
    elif policy == "threshold":
        ref = ref_fastdllm(model, PROMPT, G, K, "threshold", tau=opts["threshold"])
    else:
        ref = ref_dream(model, PROMPT, G, S, policy)
    out = _ours(model, policy, G, K, S, **opts)
    assert out.trace.commit_step()[0].tolist() == ref.commit_step
    assert ref.commit_step == sorted(ref.commit_step)  # left to right
    assert out.nfe == ref.nfe


@pytest.mark.parametrize("G,K,S", [(32, 8, 32), (30, 10, 9), (24, 24, 8)])
def test_lowconf_on_dream_uses_shifted_logits(dream, G, K, S):
    """The LLaDA quota rule on a Dream model: same algorithm, logits one position earlier (docs/models.md#logit-shift)."""
    ref = ref_llada_quota(dream, PROMPT, G, K, S)
    _check_against(_ours(dream, "lowconf", G, K, S), ref, G)


@pytest.mark.parametrize("G,K,S", [(32, 8, 32), (30, 10, 9), (16, 8, 32)])
def test_random_remasking_replays_llada_generate(llada, G, K, S):
    """Random remasking draws its own uniform numbers, so the positions are taken from our trace; everything
    else (quota per step, eligible positions, the argmax tokens given the canvas, NFE) is re-derived."""
    out = _ours(llada, "random", G, K, S, seed=123)
    committed = [set((s.committed[0].nonzero().squeeze(1) + s.window_start).tolist()) for s in out.trace.steps]

    def follow(step, cand, quota):
        assert step < len(committed), "ours ran fewer steps than the reference"
        return sorted(committed[step])

    ref = ref_llada_quota(llada, PROMPT, G, K, S, follow=follow)
    assert out.tokens[0].tolist() == ref.tokens
    assert out.nfe == ref.nfe == len(committed)
    assert ref.nfe_all == S


def test_random_remasking_picks_uniform_positions(flat_llada):
    """At the first step of a block of 8 with one token per step every position is equally likely (and the
    choice ignores confidence): 240 rows with different seeds in one batch."""
    rows, K = 240, 8
    out = dllm.generate(flat_llada, [PROMPT] * rows, policy="random", gen_length=K, block_length=K, steps=K,
                        seed=list(range(rows)), stop_at_eos=False, trace=True)
    first = out.trace.steps[0].committed
    assert first.sum(-1).tolist() == [1] * rows
    counts = first.sum(0)[-K:].double()
    expected = rows / K
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.3, counts.tolist()  # 7 dof, p = 0.001
    assert counts.min() > 0


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
@pytest.mark.parametrize("G,K", [(32, 8), (32, 32), (24, 12)])
def test_threshold_matches_fastdllm(llada, tau, G, K):
    ref = ref_fastdllm(llada, PROMPT, G, K, "threshold", tau=tau)
    out = _ours(llada, "threshold", G, K, G // K, threshold=tau)
    _check_against(out, ref, G)
    # genuinely parallel (the test could fail): several tokens in one step, fewer forwards than tokens
    assert max(ref.per_step) >= (3 if tau <= 0.7 else 2) and ref.nfe < G, ref.per_step
    if tau == 0.5:
        assert ref.nfe <= G // 2, ref.per_step


@pytest.mark.parametrize("tau", [0.5, 0.9])
def test_threshold_on_dream(dream, tau):
    ref = ref_fastdllm(dream, PROMPT, 32, 8, "threshold", tau=tau)
    _check_against(_ours(dream, "threshold", 32, 8, 4, threshold=tau), ref, 32)
    assert max(ref.per_step) >= 2


def test_threshold_one_means_one_token_per_step(llada):
    ref = ref_fastdllm(llada, PROMPT, 16, 8, "threshold", tau=1.0)
    out = _ours(llada, "threshold", 16, 8, 2, threshold=1.0)
    _check_against(out, ref, 16)
    assert ref.per_step == [1] * 16 and out.nfe == 16


@pytest.mark.parametrize("f", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("G,K", [(32, 8), (32, 32)])
def test_factor_matches_paper_rule(llada, f, G, K):
    ref = ref_fastdllm(llada, PROMPT, G, K, "factor", factor=f)
    out = _ours(llada, "factor", G, K, G // K, factor=f)
    _check_against(out, ref, G)
    assert max(ref.per_step) >= 2 and ref.nfe < G, ref.per_step


def test_factor_differs_from_reference_off_by_one_quirk():
    """FD-later's factor rule accepts the last candidate when it is the first to fail (docs/methods.md#fast-dllm); dllm
    implements the paper rule and does not. Confidences [0.95, 0.9, 0.5] with factor 1: thresholds are
    -1, 0.5, 0.667 -> the paper accepts 2, the reference 3."""
    from dllm.samplers.base import PolicyState, Proposal
    from dllm.samplers.selectors import FactorSelector

    def commit(values, upstream=False):
        conf = torch.tensor([values])
        cand = torch.isfinite(conf)
        ctx = _ctx(torch.zeros(1, len(values), 8), cand)
        return FactorSelector(1.0, upstream)(Proposal(tokens=torch.zeros(1, len(values), dtype=torch.long), confidence=conf),
                                   ctx, PolicyState(1, torch.device("cpu")))

    def ref_count(c, quirk):
        """Oracle: the number of tokens the paper rule (quirk=False) or FD-later (quirk=True) commits."""
        order = sorted(c, reverse=True)
        n, count = len(order), len(order)
        for r, v in enumerate(order):
            if v < (-1.0 if r == 0 else 1 - 1.0 / (r + 2)):
                count = r
                break
        return n if quirk and count == n - 1 else count

    # Oracle self-check (not a product check): the hand-computed counts of the docstring.
    assert ref_count([0.5, 0.95, 0.9], quirk=False) == 2
    assert ref_count([0.5, 0.95, 0.9], quirk=True) == 3  # the reference would also commit the 0.5 token
    assert ref_count([0.95, 0.4, 0.99, 0.3], quirk=True) == ref_count([0.95, 0.4, 0.99, 0.3], quirk=False) == 2

    # Product: dllm's selector commits the paper rule's set, not the quirk's
    assert commit([0.5, float("-inf"), 0.95, 0.9]).tolist() == [[False, False, True, True]]  # 2 tokens, not 3
    # a failure before the last rank is the same in both: the two most confident, 0.99 and 0.95
    assert commit([0.95, 0.4, 0.99, 0.3]).tolist() == [[True, False, True, False]]
    # the upstream option commits the quirk's set: the failing last candidate too, and nothing else changes
    assert commit([0.5, float("-inf"), 0.95, 0.9], upstream=True).tolist() == [[True, False, True, True]]
    assert commit([0.95, 0.4, 0.99, 0.3], upstream=True).tolist() == [[True, False, True, False]]


def test_factor_quirk_changes_end_to_end_decoding(llada):
    """On the sharpened model the quirk situation (last candidate is the first to fail) does occur; our
    result equals the paper-rule reference and differs from the quirk-reproducing one."""
    paper = ref_fastdllm(llada, PROMPT, 32, 8, "factor", factor=1.0)
    quirky = ref_fastdllm(llada, PROMPT, 32, 8, "factor", factor=1.0, quirk=True)
    out = _ours(llada, "factor", 32, 8, 4, factor=1.0)
    assert paper.quirk_hits > 0
    assert out.tokens[0].tolist() == paper.tokens and out.nfe == paper.nfe
    assert (quirky.tokens, quirky.nfe) != (paper.tokens, paper.nfe)
    # rule="upstream" reproduces the reference with its quirk, step for step
    upstream = _ours(llada, "factor", 32, 8, 4, factor=1.0, rule="upstream")
    _check_against(upstream, quirky, 32)


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("G,S", [(16, 16), (24, 6), (20, 7), (12, 24)])
def test_dream_diffusion_generate(dream, alg, G, S):
    ref = ref_dream(dream, PROMPT, G, S, alg)
    out = _ours(dream, alg, G, G, S)
    _check_against(out, ref, G)
    assert out.nfe == S  # Dream runs every step, including zero-transfer ones
    if G == S:
        assert ref.per_step[0] == 0 and ref.per_step[-1] == 2
    if S < G:
        assert max(ref.per_step) >= 3


@pytest.mark.parametrize("alg", ["maskgit_plus", "entropy"])
def test_dream_algs_on_llada_model(llada, alg):
    """The Dream rules are model-agnostic: on LLaDA (no shift) they give the same decisions."""
    ref = ref_dream(llada, PROMPT, 24, 6, alg)
    _check_against(_ours(llada, alg, 24, 24, 6), ref, 24)


# ======================================================================================================
# Batching
# ======================================================================================================

RAGGED = [[1, 17, 99], [1, 30, 31, 32, 33, 34, 35, 36], [1, 200, 201, 202, 203]]
POLICIES = [("lowconf", {}), ("random", {}), ("threshold", {"threshold": 0.7}), ("factor", {"factor": 1.0}),
            ("maskgit_plus", {}), ("topk_margin", {}), ("entropy", {})]


@pytest.mark.parametrize("kind", ["llada", "dream"])
@pytest.mark.parametrize("policy,opts", POLICIES, ids=[p for p, _ in POLICIES])
def test_ragged_batch_equals_single_runs(request, kind, policy, opts):
    model = request.getfixturevalue(kind)
    G, K, S = 16, 8, 8
    batch = dllm.generate(model, RAGGED, policy=policy, gen_length=G, block_length=K, steps=S, stop_at_eos=False,
                          seed=9, **opts)
    singles = [dllm.generate(model, [p], policy=policy, gen_length=G, block_length=K, steps=S, stop_at_eos=False,
                             seed=9, **opts) for p in RAGGED]
    for i, one in enumerate(singles):
        assert batch.tokens[i].tolist() == one.tokens[0].tolist(), f"row {i}"
        assert batch.seq_nfe[i] == one.nfe == one.seq_nfe[0]
    assert batch.nfe == max(batch.seq_nfe)  # no cache: one batched forward per step while any row is active
    assert len({tuple(r) for r in batch.tokens.tolist()}) == 3


def test_ragged_threshold_rows_finish_at_different_times(llada):
    out = dllm.generate(llada, RAGGED, policy="threshold", threshold=0.7, gen_length=16, block_length=8, steps=2,
                        stop_at_eos=False)
    assert len(set(out.seq_nfe)) > 1, out.seq_nfe  # the batch test above is not trivially synchronous


# ======================================================================================================
# Temperature > 0
# ======================================================================================================

@pytest.mark.parametrize("kind,policy", [("flat_llada", "lowconf"), ("flat_llada", "threshold"),
                                         ("flat_dream", "maskgit_plus"), ("flat_dream", "random")])
def test_sampling_is_seeded_and_batch_invariant(request, kind, policy):
    model = request.getfixturevalue(kind)
    kw = {"policy": policy, "gen_length": 8, "block_length": 8, "steps": 4, "temperature": 1.0, "stop_at_eos": False}
    singles = [dllm.generate(model, [p], seed=1, **kw).tokens[0].tolist() for p in RAGGED]
    assert dllm.generate(model, [RAGGED[0]], seed=1, **kw).tokens[0].tolist() == singles[0]  # same seed
    other = dllm.generate(model, [RAGGED[0]], seed=2, **kw).tokens[0].tolist()
    assert other != singles[0]  # different seed (a flat model: 256 nearly equally likely tokens)
    greedy = dllm.generate(model, [RAGGED[0]], seed=1, **{**kw, "temperature": 0.0}).tokens[0].tolist()
    assert greedy != singles[0]
    batch = dllm.generate(model, RAGGED, seed=1, **kw).tokens.tolist()
    assert batch == singles  # one seed for all rows: each row samples as it would alone
    mixed = dllm.generate(model, RAGGED, seed=[2, 1, 1], **kw).tokens.tolist()
    assert mixed == [other, singles[1], singles[2]]  # per-row seeds


def _ctx(logits: torch.Tensor, candidates: torch.Tensor, seed: int = 0, temperature: float = 0.0) -> StepContext:
    b, w, _ = logits.shape
    zeros = torch.zeros(b, dtype=torch.long)
    return StepContext(
        logits=logits, tokens=torch.full((b, w), MASK), candidates=candidates, undecided=candidates.clone(),
        window_start=0, gen_start=0, gen_length=w, block_start=zeros, block_end=zeros + w, step=zeros,
        block_steps=zeros + 1, block_mask_count=candidates.sum(-1), decoded=zeros, active=torch.ones(b, dtype=torch.bool),
        generators=[torch.Generator().manual_seed(seed + i) for i in range(b)],
        special=SpecialTokens(mask=MASK, eos=2, pad=2), temperature=temperature,
    )


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_gumbel_sampling_matches_softmax(temperature):
    """LLaDA's add_gumbel_noise (docs/methods.md#llada) samples softmax(logits / T): empirical frequencies over many
    positions and seeds match it."""
    from dllm.samplers.scoring import sample_tokens

    base = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 1.5], dtype=torch.float64)
    p = torch.softmax(base / temperature, -1)
    w, seeds = 2500, 4
    counts = torch.zeros_like(base)
    for seed in range(seeds):
        logits = base.expand(1, w, -1).clone()
        cand = torch.ones(1, w, dtype=torch.bool)
        cand[0, :5] = False  # non-candidates keep the argmax
        tokens = sample_tokens(logits, _ctx(logits, cand, seed=seed), temperature)
        assert tokens[0, :5].tolist() == [0] * 5
        counts += torch.bincount(tokens[0, 5:], minlength=base.numel()).double()
    n = counts.sum()
    freq = counts / n
    sd = torch.sqrt(p * (1 - p) / n)
    assert ((freq - p).abs() <= 4.5 * sd).all(), (freq.tolist(), p.tolist())
    chi2 = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 20.5  # 5 dof, p = 0.001
    # same generator seed -> same samples; temperature 0 -> argmax
    logits = base.expand(1, 50, -1).clone()
    cand = torch.ones(1, 50, dtype=torch.bool)
    assert torch.equal(sample_tokens(logits, _ctx(logits, cand, 3), temperature),
                       sample_tokens(logits, _ctx(logits, cand, 3), temperature))
    assert sample_tokens(logits, _ctx(logits, cand, 3), 0.0).tolist() == [[0] * 50]


def test_sampled_confidence_is_unit_temperature_probability():
    """Spec 3: with temperature > 0 the confidence is softmax(logits) (T = 1) at the sampled token."""
    from dllm.samplers.scoring import ProbabilityScorer

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 30, 12, generator=g, dtype=torch.float64) * 2
    cand = torch.rand(2, 30, generator=g) < 0.7
    prop = ProbabilityScorer(1.7)(logits, _ctx(logits, cand, temperature=1.7))
    p = torch.softmax(logits, -1).gather(-1, prop.tokens[..., None])[..., 0]
    assert torch.allclose(prop.confidence[cand].double(), p[cand], atol=1e-6)
    assert torch.isneginf(prop.confidence[~cand]).all()


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_dream_scorer_confidences(alg, temperature):
    """Dream's sample_tokens (docs/methods.md#dream): probabilities of logits / T; confidence = p[x0] (maskgit_plus),
    top-1 minus top-2 (topk_margin) or sum p log(p + 1e-10) (entropy); x0 = argmax at T = 0."""
    from dllm.samplers.scoring import DreamScorer

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 25, 12, generator=g, dtype=torch.float64) * 3
    cand = torch.rand(2, 25, generator=g) < 0.6
    prop = DreamScorer(alg, temperature)(logits, _ctx(logits, cand, temperature=temperature))
    p = torch.softmax(logits / temperature if temperature > 0 else logits, -1)
    if temperature == 0:
        assert torch.equal(prop.tokens[cand], logits.argmax(-1)[cand])
    if alg == "maskgit_plus":
        want = p.gather(-1, prop.tokens[..., None])[..., 0]
    elif alg == "topk_margin":
        top = p.sort(-1, descending=True).values
        want = top[..., 0] - top[..., 1]
    else:
        want = (p * torch.log(p + 1e-10)).sum(-1)
    assert torch.allclose(prop.confidence[cand].double(), want[cand], atol=1e-5)
    assert torch.isneginf(prop.confidence[~cand]).all()
