"""Synthetic ParallelBench-style suite: determinism, split hygiene and exact scoring."""

from __future__ import annotations

import re

import pytest

from dllm.errors import DllmError
from dllm.evals.synthetic import (
    ANSWER_LENGTH,
    FAMILIES,
    MAX_ANSWER_CHARS,
    MULTI_ANSWER_FAMILIES,
    PROMPT_EXAMPLES,
    TEST_POOL_SIZE,
    SyntheticExample,
    generate_examples,
    interleave_families,
    load_split,
    prompt_family,
    score,
)


def test_families_exact_names() -> None:
    assert FAMILIES == ("copy", "reverse", "sort", "add", "gsm-mini", "shuffle")
    assert MULTI_ANSWER_FAMILIES == ("shuffle",)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_is_deterministic_by_seed(family: str) -> None:
    a = generate_examples(family, 50, seed=7)
    assert a == generate_examples(family, 50, seed=7)
    assert a != generate_examples(family, 50, seed=8)
    assert len({ex.prompt for ex in a}) == 50  # distinct prompts
    assert generate_examples(family, 20, seed=7) == a[:20]  # prefix-stable


def test_load_split_deterministic_and_ids() -> None:
    test = load_split("test", n_per_family=30, seed=3)
    assert test == load_split("test", n_per_family=30, seed=3)
    assert test != load_split("test", n_per_family=30, seed=4)
    assert len(test) == 30 * len(FAMILIES)
    assert [ex.family for ex in test[::30]] == list(FAMILIES)
    assert test[17].id == "copy-17"
    assert {ex.id for ex in test if ex.family == "add"} == {f"add-{i}" for i in range(30)}
    assert load_split("test", 10, families=["add"], seed=3) == [ex for ex in test if ex.family == "add"][:10]
    assert load_split("train", 40, seed=3) == load_split("train", 40, seed=3)


def test_train_never_contains_test_prompts() -> None:
    for seed in (0, 1):
        test_prompts = {ex.prompt for ex in load_split("test", n_per_family=TEST_POOL_SIZE, seed=seed)}
        train = load_split("train", n_per_family=2000, seed=seed)
        assert len(train) == 2000 * len(FAMILIES)
        assert not test_prompts & {ex.prompt for ex in train}


def test_test_split_size_limit() -> None:
    with pytest.raises(DllmError):
        load_split("test", n_per_family=TEST_POOL_SIZE + 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_scorer_accepts_truth_rejects_wrong(family: str) -> None:
    for ex in generate_examples(family, 20, seed=11):
        assert score(ex, ex.answer)
        assert score(ex, f"  {ex.answer}\n")
        assert score(ex, ex.answer + "<|eos|><|eos|>garbage")
        assert score(ex, ex.answer + "<|endoftext|>x")
        assert not score(ex, ex.answer + "x")
        assert not score(ex, ex.answer[:-1])
        assert not score(ex, "")
        wrong = ex.answer[:-1] + ("0" if ex.answer[-1] != "0" else "1")
        assert not score(ex, wrong)


def test_answers_fit_answer_region_with_eos() -> None:
    for ex in load_split("test", 200, seed=0) + load_split("train", 200, seed=0):
        assert 1 <= len(ex.answer) <= MAX_ANSWER_CHARS
        assert len(ex.answer) + 1 <= ANSWER_LENGTH  # char tokenizer: one token per char, >= 1 EOS left
        assert ex.answer == ex.answer.strip()


def test_task_semantics() -> None:
    for ex in load_split("test", 200, seed=5):
        if ex.family == "add":
            m = re.fullmatch(r"add:(\d+)\+(\d+)=", ex.prompt)
            assert m, ex.prompt
            assert int(ex.answer) == int(m.group(1)) + int(m.group(2))
            assert ex.answer == str(int(ex.answer))
        elif ex.family in ("copy", "reverse", "sort"):
            m = re.fullmatch(rf"{ex.family}:([a-z0-9]+)=", ex.prompt)
            assert m, ex.prompt
            s = m.group(1)
            expected = {"copy": s, "reverse": s[::-1], "sort": "".join(sorted(s))}[ex.family]
            assert ex.answer == expected
        elif ex.family == "shuffle":
            m = re.fullmatch(r"shuffle:([a-z0-9]{4,8})=", ex.prompt)
            assert m, ex.prompt
            s = m.group(1)
            assert len(set(s)) == len(s)  # distinct, so a repeated character is always an error
            assert sorted(ex.answer) == sorted(s) and ex.answer != s
        else:
            assert ex.prompt.startswith("Q: ") and ex.prompt.endswith("? A:")
            assert ex.answer.isdigit()  # non-negative integer


def test_shuffle_accepts_every_rearrangement_but_the_input() -> None:
    import itertools

    ex = SyntheticExample("shuffle", "shuffle:ab3k=", "k3ab", "shuffle-0")
    perms = {"".join(p) for p in itertools.permutations("ab3k")}
    assert all(score(ex, p) for p in perms - {"ab3k"})  # 23 right answers, not just the stored one
    assert score(ex, "ba3k<|eos|>ab")
    for wrong in ("ab3k", "aa3k", "ab3", "ab3kk", "ab3x", "", "k3ab k"):
        assert not score(ex, wrong), wrong


def test_shuffle_training_answers_vary_for_one_input() -> None:
    """Random rearrangements (not one fixed rule) are what spreads the marginals that parallel decoding trips on."""
    exs = generate_examples("shuffle", 300, seed=4)
    same_first = sum(ex.prompt[len("shuffle:")] == ex.answer[0] for ex in exs) / len(exs)
    assert same_first < 0.35  # a random rearrangement keeps the first character in place 1/n of the time


def test_gsm_mini_known_template() -> None:
    hits = 0
    for ex in generate_examples("gsm-mini", 300, seed=2):
        m = re.fullmatch(r"Q: (\w+) has (\d+) (\w+) and buys (\d+) more\. How many \3 does \1 have\? A:", ex.prompt)
        if m:
            hits += 1
            assert int(ex.answer) == int(m.group(2)) + int(m.group(4))
        m = re.fullmatch(r"Q: A box has (\d+) (\w+)\. \w+ takes out (\d+)\. How many \2 are in the box\? A:", ex.prompt)
        if m:
            hits += 1
            assert int(ex.answer) == int(m.group(1)) - int(m.group(3)) >= 0
    assert hits >= 20


def test_unknown_family_and_split_errors() -> None:
    with pytest.raises(DllmError, match="copy, reverse, sort, add, gsm-mini, shuffle"):
        generate_examples("multiply", 3, seed=0)
    with pytest.raises(DllmError, match="gsm-mini"):
        load_split("test", 5, families=["copy", "nope"])
    with pytest.raises(DllmError, match="train"):
        load_split("dev", 5)


def test_examples_are_immutable_values() -> None:
    """Split examples are shared by every run of an eval (and keyed by content): a consumer cannot alter them,
    and equal content means equal, hashable examples."""
    test = load_split("test", n_per_family=5, seed=0)
    with pytest.raises(AttributeError):
        test[0].answer = "x"  # type: ignore[misc]
    assert test[0].answer != "x"
    copy = SyntheticExample(test[0].family, test[0].prompt, test[0].answer, test[0].id)
    assert copy == test[0] and copy in set(test) and len(set(test)) == len(test)


def test_prompt_family_recognises_every_generated_prompt_and_nothing_else() -> None:
    for ex in load_split("test", 50, seed=0) + load_split("train", 50, seed=0):
        assert prompt_family(ex.prompt) == ex.family, ex.prompt
    assert [prompt_family(p) for p in PROMPT_EXAMPLES] == ["add", "copy", "reverse", "sort", "shuffle", "gsm-mini"]
    for other in ("12+34=", "add:12+34", "copy:AB=", "sort:a1=", "hello", "", "Q: hi A:", "add:1+2=3"):
        assert prompt_family(other) is None, other


def test_interleave_families_is_round_robin() -> None:
    examples = load_split("test", n_per_family=3)
    mixed = interleave_families(examples, 3)
    assert [ex.family for ex in mixed[:len(FAMILIES)]] == list(FAMILIES)  # the first of every family, in order
    assert [ex.id for ex in mixed[len(FAMILIES)::len(FAMILIES)]] == [examples[1].id, examples[2].id]  # copy-1, copy-2
    assert sorted(ex.id for ex in mixed) == sorted(ex.id for ex in examples)
    assert interleave_families([], 0) == []
