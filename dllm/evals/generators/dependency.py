"""HumanEval-format problems with many correct completions: the token-dependency family at real length.

Why: ParallelBench shows parallel unmasking breaks where answer tokens depend on each other, and
``dllm.evals.synthetic``'s ``shuffle`` is that case at 16 tokens. These problems are the same situation inside a
HumanEval answer: the function returns a literal with interchangeable parts ("5 different multiples of 7 below
60, any order"), so each position of the literal has a spread marginal over the valid values. Committing
several positions in one step, each from its own marginal, picks the same value twice or breaks the sum, and
the unit tests, which check validity rather than one answer, fail. They run through
:func:`dllm.evals.humaneval.score` unchanged.

Name: ``dependency`` (not ``multi_answer``) because the property that matters for decoding is the dependency
between answer tokens; multiple valid answers are how it arises.

The canonical solution is one valid literal drawn at random (random subset, random order), exactly as
``shuffle``'s ``answer`` is one random valid rearrangement: a model trained on these learns the spread
marginals that make the task parallel-hostile, instead of one memorised answer per prompt.

Split rules are :mod:`dllm.evals.generators.humaneval_format`'s (held-out names, phrasings, constants; the
``even`` variant of ``sum_to_target`` is test-only).
"""

from __future__ import annotations

from dllm.evals.generators.problem import NUM_LIST, WORDS, Gen, Spec


def _literal_list(values: list[int]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _distinct_list_checks(n: int, *conditions: str) -> list[str]:
    """The asserts of a "return n distinct numbers such that ..." problem: a list of n distinct values, then each
    of ``conditions`` (an expression over ``result``)."""
    return ["    result = candidate()", "    assert isinstance(result, list)", f"    assert len(result) == {n}",
            f"    assert len(set(result)) == {n}"] + [f"    assert {c}" for c in conditions]


def _distinct_multiples(g: Gen) -> Spec:
    name = g.name(("some_multiples", "pick_multiples", "multiples_below", "choose_multiples", "list_multiples",
                   "few_multiples"))
    k = g.const("k", range(3, 15))
    n = g.const("n", range(4, 10))
    spare = g.rng.randint(3, 8)
    m = k * (n + spare) + g.rng.randint(1, k)  # at least n + spare valid values, so many answers
    doc = g.phrase((
        "Return a list of {n} different positive multiples of {k} that are all smaller than {m}. Any order is fine.",
        "Give {n} distinct numbers below {m} that are divisible by {k} (and greater than 0), in any order.",
        "Return any {n} different positive integers less than {m} that are multiples of {k}.",
        "List {n} distinct multiples of {k} between 1 and {m} (exclusive); the order does not matter.",
        "Pick {n} different positive numbers under {m}, each divisible by {k}, and return them as a list.",
        "Return {n} unique positive multiples of {k}, each below {m}, in whatever order you like.",
    )).format(n=n, k=k, m=m)
    valid = list(range(k, m, k))
    answer = g.rng.sample(valid, n)
    body = f"    return {_literal_list(answer)}\n"
    checks = _distinct_list_checks(n, f"all(isinstance(x, int) and 0 < x < {m} for x in result)",
                                   f"all(x % {k} == 0 for x in result)")
    examples = [(f"len(set({name}()))", str(n)), (f"all(x % {k} == 0 for x in {name}())", "True")]
    return Spec(f"def {name}() -> List[int]:", doc, body, [()], NUM_LIST, checks, examples)


def _anagram(g: Gen) -> Spec:
    name = g.name(("scramble", "rearrange", "mix_letters", "anagram", "jumble", "reorder_letters"))
    pool = [w for w in WORDS if len(w) >= 4 and len(set(w)) == len(w)]
    word = g.const("word", pool)
    doc = g.phrase((
        "Return a string made of exactly the letters of '{w}' (each used once) in a different order than '{w}'.",
        "Rearrange the letters of '{w}' into any other order and return it; it must not equal '{w}'.",
        "Return an anagram of '{w}' that is not '{w}' itself.",
        "Give any reordering of the characters of '{w}' other than the original.",
        "Shuffle the letters of '{w}' so the result differs from '{w}', and return it.",
        "Return a permutation of '{w}' different from '{w}'.",
    )).format(w=word)
    while (answer := "".join(g.rng.sample(word, len(word)))) == word:
        pass
    body = f"    return {answer!r}\n"
    checks = [
        "    result = candidate()",
        "    assert isinstance(result, str)",
        f"    assert len(result) == {len(word)}",
        "    assert result.isalpha() and result.islower()",
        f"    assert sorted(result) == sorted({word!r})",
        f"    assert result != {word!r}",
    ]
    examples = [(f"sorted({name}()) == sorted({word!r})", "True"), (f"{name}() == {word!r}", "False")]
    return Spec(f"def {name}() -> str:", doc, body, [()], "", checks, examples)


def _digit_sum_numbers(g: Gen) -> Spec:
    name = g.name(("digit_sum_picks", "numbers_with_digit_sum", "two_digit_sum", "digits_add_to", "pick_by_digits",
                   "digit_total_list"))
    s = g.const("s", range(6, 15))
    valid = [x for x in range(10, 100) if x // 10 + x % 10 == s]
    n = g.const("n", range(3, 6))
    doc = g.phrase((
        "Return a list of {n} different two-digit numbers whose two digits add up to {s}, in any order.",
        "Give {n} distinct numbers from 10 to 99 with digit sum {s}; any order.",
        "Return any {n} different two-digit integers whose digits sum to {s}.",
        "List {n} distinct two-digit numbers where the tens digit plus the ones digit is {s}.",
        "Pick {n} different numbers between 10 and 99 whose digits total {s} and return them.",
        "Return {n} unique two-digit numbers with a digit sum of {s}, in whatever order.",
    )).format(n=n, s=s)
    answer = g.rng.sample(valid, n)
    body = f"    return {_literal_list(answer)}\n"
    checks = _distinct_list_checks(n, "all(isinstance(x, int) and 10 <= x <= 99 for x in result)",
                                   f"all(x // 10 + x % 10 == {s} for x in result)")
    examples = [(f"len(set({name}()))", str(n)), (f"all(x // 10 + x % 10 == {s} for x in {name}())", "True")]
    return Spec(f"def {name}() -> List[int]:", doc, body, [()], NUM_LIST, checks, examples)


def _sum_to_target(g: Gen) -> Spec:
    name = g.name(("parts_of", "split_total", "sum_pieces", "make_total", "add_up_to", "break_into"))
    var = g.variant(("any",), ("even",))
    n = g.const("n", range(3, 7))
    step = 2 if var == "even" else 1
    # Totals well above the smallest possible one (n(n+1)/2, twice that for even parts), so answers abound.
    t = g.const("t", range(40, 100)) if var == "any" else 2 * g.const("half_t", range(25, 55))
    kind = "positive integers" if var == "any" else "positive even integers"
    doc = g.phrase((
        "Return a list of {n} different {kind} that add up to {t}. Any such list is accepted.",
        "Give {n} distinct {kind} whose sum is exactly {t}, in any order.",
        "Return any {n} different {kind} with total {t}.",
        "Split {t} into {n} distinct {kind} and return them as a list.",
        "Find {n} unique {kind} summing to {t}; return them.",
        "Return {n} different {kind} whose sum equals {t}, in whatever order you like.",
    )).format(n=n, t=t, kind=kind)
    while True:  # random distinct parts: n - 1 random values, the last one closes the sum
        parts = g.rng.sample(range(step, t, step), n - 1)
        last = t - sum(parts)
        if last > 0 and last not in parts:
            break
    answer = parts + [last]
    g.rng.shuffle(answer)
    body = f"    return {_literal_list(answer)}\n"
    checks = _distinct_list_checks(n, "all(isinstance(x, int) and x > 0 for x in result)", f"sum(result) == {t}")
    if var == "even":
        checks.append("    assert all(x % 2 == 0 for x in result)")
    examples = [(f"sum({name}())", str(t)), (f"len(set({name}()))", str(n))]
    return Spec(f"def {name}() -> List[int]:", doc, body, [()], NUM_LIST, checks, examples)


FAMILIES = {
    "dependency/distinct_multiples": _distinct_multiples,
    "dependency/anagram": _anagram,
    "dependency/digit_sum_numbers": _digit_sum_numbers,
    "dependency/sum_to_target": _sum_to_target,
}
"""Multi-answer families by name; :func:`humaneval_format.all_families` adds them to the plain ones."""
