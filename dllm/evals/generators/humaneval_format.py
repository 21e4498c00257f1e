"""Seeded HumanEval-format programming problems: short list, string and number functions.

Why: HumanEval is the other half of LLaDA's reported workload (a 40-150 token code answer, EOS padding after
it, pass/fail by unit tests), but real HumanEval is 164 problems a small model trained from scratch cannot
solve. These problems keep HumanEval's exact record schema and layout, so :mod:`dllm.evals.humaneval` loads,
prompts, sanitises and tests them unchanged, while each comes from a family a small model can learn.

Record: ``task_id`` (``SynthEval/N``), ``prompt`` (imports if needed, the signature, a docstring with ``>>>``
examples, as HumanEval writes them), ``canonical_solution`` (the indented body only), ``test``
(``def check(candidate):`` with at least ``MIN_ASSERTS`` asserts), ``entry_point``. Expected values in the
examples and asserts are computed by running the canonical solution itself, so they cannot disagree with it.

Splits (``random.Random`` only, deterministic per seed, prefix-stable in ``n``): every family draws its
function name, its docstring phrasing and each constant from a list whose every third entry (index % 3 == 2,
see ``held_out``) is reserved for the test split; test records use only reserved entries, train records never
do. Some families also have test-only *variants* (e.g. "divisible by K" next to "greater than K"), drawn for
``TEST_VARIANT_SHARE`` of a family's test records. The dependency families of
:mod:`dllm.evals.generators.dependency` (many valid completions) join the mix with the same rules.

``meta`` (with ``with_meta=True`` only; never written to the JSONL) records family, variant, name, phrasing
index and constants with the split each was drawn from.
"""

from __future__ import annotations

import hashlib
import random
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from dllm.errors import DllmError, check_choice
from dllm.evals.generators.problem import (  # noqa: F401  (re-exported: part of this module's API)
    MIN_ASSERTS,
    N_EXAMPLES,
    NUM_LIST,
    SPLITS,
    TASK_PREFIX,
    TEST_VARIANT_SHARE,
    WORDS,
    Gen,
    Spec,
    held_out,
)

# --- input helpers ----------------------------------------------------------------------------------------------

def _ints(rng: random.Random, lo: int, hi: int, nmin: int = 3, nmax: int = 7) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(nmin, nmax))]


def _words(rng: random.Random, nmin: int = 2, nmax: int = 6) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(nmin, nmax))]


def _sentence(rng: random.Random, nmin: int = 2, nmax: int = 6) -> str:
    return " ".join(_words(rng, nmin, nmax))


def _many(rng: random.Random, make: Callable[[], tuple], n: int, first: Sequence[tuple] = ()) -> list[tuple]:
    """``first`` (edge cases) after two random examples, then random argument tuples up to ``n``, no repeats."""
    out: list[tuple] = []
    tries = 0
    while len(out) < 2 and tries < 100:
        tries += 1
        args = make()
        if args not in out:
            out.append(args)
    out += [a for a in first if a not in out]
    while len(out) < n and tries < 200:
        tries += 1
        args = make()
        if args not in out:
            out.append(args)
    return out


_CMP = {"greater": (">", "greater than"), "less": ("<", "less than"), "at_least": (">=", "at least"),
        "at_most": ("<=", "at most")}


# --- families -----------------------------------------------------------------------------------------------------


def _sum_filtered(g: Gen) -> Spec:
    name = g.name(("sum_above", "total_over", "sum_bigger", "add_large", "sum_selected", "sum_past"))
    k = g.const("k", range(0, 15))
    var = g.variant(("greater", "less"), ("at_least",))
    op, words = _CMP[var]
    doc = g.phrase((
        "Return the sum of the elements of numbers that are {w} {k}.",
        "Add up every number in the list that is {w} {k} and return the total.",
        "Given a list of integers, return the sum of those {w} {k}. An empty selection sums to 0.",
        "Compute the total of all values in numbers {w} {k}.",
        "Sum the integers of the list that are {w} {k}.",
        "Return how much the numbers {w} {k} add up to.",
    )).format(w=words, k=k)
    body = f"    total = 0\n    for x in numbers:\n        if x {op} {k}:\n            total += x\n    return total\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, -5, 25),), 7, [([],), ([k],)])
    return Spec(f"def {name}(numbers: List[int]) -> int:", doc, body, inputs, NUM_LIST)


def _count_filtered(g: Gen) -> Spec:
    name = g.name(("count_above", "how_many_over", "count_large", "tally_bigger", "count_matching", "num_past"))
    k = g.const("k", range(0, 15))
    var = g.variant(("greater", "less"), ("at_most",))
    op, words = _CMP[var]
    doc = g.phrase((
        "Return how many elements of numbers are {w} {k}.",
        "Count the numbers in the list that are {w} {k}.",
        "Given a list of integers, return the count of values {w} {k}.",
        "Return the number of entries {w} {k}.",
        "How many of the given integers are {w} {k}? Return that count.",
        "Count and return the items of numbers that are {w} {k}.",
    )).format(w=words, k=k)
    body = f"    count = 0\n    for x in numbers:\n        if x {op} {k}:\n            count += 1\n    return count\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, -5, 25),), 7, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> int:", doc, body, inputs, NUM_LIST)


def _rotate_string(g: Gen) -> Spec:
    name = g.name(("rotate_left", "shift_text", "rotate_string", "spin_word", "cycle_chars", "roll_string"))
    k = g.const("k", range(1, 10))
    var = g.variant(("left",), ("right",))
    doc = g.phrase((
        "Rotate the string s {d} by {k} characters and return it. The rotation wraps around.",
        "Return s rotated {d} by {k} positions (the shift is taken modulo the length).",
        "Move the characters of s {k} places to the {d}, wrapping around the end.",
        "Return the string obtained by rotating s {k} steps {d}.",
        "Cyclically shift s {d} by {k} and return the result.",
        "Give back s after a {d} rotation by {k} characters.",
    )).format(d=var, k=k)
    if var == "left":
        body = f"    if not s:\n        return s\n    k = {k} % len(s)\n    return s[k:] + s[:k]\n"
    else:
        body = f"    if not s:\n        return s\n    k = {k} % len(s)\n    return s[len(s) - k:] + s[:len(s) - k]\n"
    inputs = _many(g.rng, lambda: (g.rng.choice(WORDS) + g.rng.choice(("", g.rng.choice(WORDS))),), 7, [("",), ("ab",)])
    return Spec(f"def {name}(s: str) -> str:", doc, body, inputs)


def _count_letters(g: Gen) -> Spec:
    name = g.name(("count_vowels", "vowel_count", "count_letters", "letter_tally", "count_chars", "num_letters"))
    var = g.variant(("vowels", "letter"), ("consonants",))
    c = g.const("c", "abcdefghijklmnopqrstuvwxyz") if var == "letter" else None
    what = {"vowels": "vowels (a, e, i, o, u)", "letter": f"occurrences of the letter '{c}'",
            "consonants": "consonants (letters that are not a, e, i, o, u)"}[var]
    doc = g.phrase((
        "Return the number of {w} in the lowercase string s.",
        "Count the {w} in s, which has only lowercase letters and spaces.",
        "Given a lowercase string, return how many {w} it has.",
        "Return the count of {w} in the text s.",
        "How many {w} does s contain? Return that number.",
        "Count {w} in s and return the count.",
    )).format(w=what)
    cond = {"vowels": 'ch in "aeiou"', "letter": f'ch == "{c}"', "consonants": 'ch.isalpha() and ch not in "aeiou"'}[var]
    body = f"    count = 0\n    for ch in s:\n        if {cond}:\n            count += 1\n    return count\n"
    inputs = _many(g.rng, lambda: (_sentence(g.rng, 1, 4),), 7, [("",)])
    return Spec(f"def {name}(s: str) -> int:", doc, body, inputs)


def _scale_list(g: Gen) -> Spec:
    name = g.name(("scale_all", "times_each", "multiply_list", "grow_values", "scale_numbers", "stretch"))
    k = g.const("k", range(2, 14))
    var = g.variant(("multiply", "add"), ("subtract",))
    sym, w = {"multiply": ("*", "multiplied by"), "add": ("+", "increased by"), "subtract": ("-", "decreased by")}[var]
    doc = g.phrase((
        "Return a new list with every element of numbers {w} {k}.",
        "Given a list of integers, return the list of each value {w} {k}.",
        "Return each number {w} {k}, keeping the order.",
        "Build and return a list where every item is {w} {k}.",
        "Map every element to itself {w} {k} and return the new list.",
        "Return the numbers, each {w} {k}.",
    )).format(w=w, k=k)
    body = f"    result = []\n    for x in numbers:\n        result.append(x {sym} {k})\n    return result\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, -9, 30, 1, 6),), 7, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> List[int]:", doc, body, inputs, NUM_LIST)


def _keep_divisible(g: Gen) -> Spec:
    name = g.name(("keep_multiples", "filter_divisible", "only_multiples", "multiples_of", "select_div", "divisible"))
    k = g.const("k", range(2, 14))
    var = g.variant(("divisible",), ("not_divisible",))
    neg = var == "not_divisible"
    doc = g.phrase((
        "Return the elements of numbers that are {n}divisible by {k}, in their original order.",
        "Keep only the integers {n}divisible by {k} and return them as a list.",
        "Filter numbers down to the values that are {n}multiples of {k}.",
        "Return a list of the items {n}evenly divisible by {k}.",
        "Select the numbers {n}divisible by {k}; return them in order.",
        "Give the sub-list of values that are {n}divisible by {k}.",
    )).format(n="not " if neg else "", k=k)
    body = f"    return [x for x in numbers if x % {k} {'!=' if neg else '=='} 0]\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, 0, 60, 2, 8),), 7, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> List[int]:", doc, body, inputs, NUM_LIST)


def _largest_below(g: Gen) -> Spec:
    name = g.name(("largest_below", "max_under", "biggest_smaller", "top_below", "best_under", "max_before"))
    k = g.const("k", range(5, 26))
    doc = g.phrase((
        "Return the largest element of numbers that is smaller than {k}, or -1 if there is none.",
        "Find the biggest value less than {k} in the list; return -1 when no value qualifies.",
        "Return the maximum of the numbers below {k}. If none is below {k}, return -1.",
        "Among the integers smaller than {k}, return the largest (or -1 if there are none).",
        "Give the greatest number under {k}, -1 if the list has none.",
        "Return the highest item that is less than {k}; -1 when there is no such item.",
    )).format(k=k)
    body = f"    best = -1\n    for x in numbers:\n        if x < {k} and x > best:\n            best = x\n    return best\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, 0, 40),), 7, [([],), ([k, k + 1],)])
    return Spec(f"def {name}(numbers: List[int]) -> int:", doc, body, inputs, NUM_LIST)


def _repeat_chars(g: Gen) -> Spec:
    name = g.name(("repeat_chars", "stutter", "echo_letters", "multiply_chars", "double_up", "repeat_each"))
    k = g.const("k", range(2, 8))
    doc = g.phrase((
        "Return a string where every character of s is repeated {k} times.",
        "Repeat each character of s {k} times in a row and return the new string.",
        "Given a string, write every character {k} times.",
        "Return s with each of its characters copied {k} times.",
        "Build a string in which each character of s appears {k} times consecutively.",
        "Stretch s by repeating every character {k} times.",
    )).format(k=k)
    body = f"    result = ''\n    for ch in s:\n        result += ch * {k}\n    return result\n"
    inputs = _many(g.rng, lambda: (g.rng.choice(WORDS)[: g.rng.randint(1, 5)],), 6, [("",)])
    return Spec(f"def {name}(s: str) -> str:", doc, body, inputs)


def _caesar(g: Gen) -> Spec:
    name = g.name(("caesar", "shift_letters", "encode_shift", "rot_text", "cipher", "move_letters"))
    k = g.const("k", range(1, 26))
    var = g.variant(("forward",), ("backward",))
    doc = g.phrase((
        "Shift every lowercase letter of s {d} by {k} places in the alphabet, wrapping around; keep other characters.",
        "Return s encoded with a Caesar shift of {k} ({d}); characters that are not lowercase letters stay as they are.",
        "Move each letter a-z {k} positions {d} in the alphabet (z wraps to a) and return the result.",
        "Apply a {d} shift of {k} to the lowercase letters of s.",
        "Encrypt s by shifting letters {k} steps {d}; spaces are unchanged.",
        "Return the text with each lowercase letter moved {d} by {k}.",
    )).format(k=k, d=var)
    sign = "+" if var == "forward" else "-"
    body = (f"    result = ''\n    for ch in s:\n        if 'a' <= ch <= 'z':\n"
            f"            result += chr((ord(ch) - ord('a') {sign} {k}) % 26 + ord('a'))\n"
            f"        else:\n            result += ch\n    return result\n")
    inputs = _many(g.rng, lambda: (_sentence(g.rng, 1, 3),), 6, [("",)])
    return Spec(f"def {name}(s: str) -> str:", doc, body, inputs)


def _every_kth(g: Gen) -> Spec:
    name = g.name(("every_kth", "take_steps", "stride", "skip_some", "pick_every", "sample_list"))
    k = g.const("k", range(2, 9))
    var = g.variant(("from_first",), ("from_kth",))
    start = 0 if var == "from_first" else k - 1
    where = "starting with the first one" if start == 0 else f"starting with element number {k}"
    doc = g.phrase((
        "Return every {k}-th element of numbers, {w}.",
        "Take one element out of every {k}, {w}, and return them as a list.",
        "Return the list of elements at steps of {k}, {w}.",
        "Pick every {k}-th item of the list, {w}.",
        "Walk through numbers in strides of {k}, {w}, and return what you visit.",
        "Return a list with every {k}-th value, {w}.",
    )).format(k=k, w=where)
    body = f"    result = []\n    for i in range({start}, len(numbers), {k}):\n        result.append(numbers[i])\n    return result\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, 0, 20, 0, 12),), 6, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> List[int]:", doc, body, inputs, NUM_LIST)


def _chunk_sums(g: Gen) -> Spec:
    name = g.name(("chunk_sums", "group_totals", "block_sums", "batch_sum", "piece_totals", "window_sums"))
    k = g.const("k", range(2, 8))
    doc = g.phrase((
        "Split numbers into consecutive groups of {k} (the last group may be shorter) and return the sum of each group.",
        "Return the totals of consecutive chunks of size {k}; a final shorter chunk is summed too.",
        "Cut the list into pieces of {k} elements, in order, and return a list with the sum of every piece.",
        "Return the sums of the blocks of {k} consecutive elements (last block may be partial).",
        "Group the integers {k} at a time and return each group's sum.",
        "Sum each run of {k} neighbours (without overlap) and return the sums.",
    )).format(k=k)
    body = f"    result = []\n    for i in range(0, len(numbers), {k}):\n        result.append(sum(numbers[i:i + {k}]))\n    return result\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, 0, 20, 0, 11),), 6, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> List[int]:", doc, body, inputs, NUM_LIST)


def _digit_count(g: Gen) -> Spec:
    name = g.name(("count_digit", "digit_hits", "how_many_digits", "digit_tally", "find_digit", "digit_freq"))
    k = g.const("k", range(0, 10))
    var = g.variant(("equal",), ("greater",))
    what = f"digits equal to {k}" if var == "equal" else f"digits greater than {k}"
    doc = g.phrase((
        "Return how many {w} the non-negative integer n has.",
        "Count the {w} in the decimal form of n.",
        "Given n >= 0, return the number of its {w}.",
        "Return the count of {w} in n.",
        "How many {w} appear in n? Return it.",
        "Look at each digit of n and count the {w}.",
    )).format(w=what)
    cond = f"d == '{k}'" if var == "equal" else f"int(d) > {k}"
    body = f"    count = 0\n    for d in str(n):\n        if {cond}:\n            count += 1\n    return count\n"
    inputs = _many(g.rng, lambda: (g.rng.randint(0, 10 ** g.rng.randint(1, 7)),), 7, [(0,)])
    return Spec(f"def {name}(n: int) -> int:", doc, body, inputs)


def _replace_char(g: Gen) -> Spec:
    name = g.name(("replace_char", "swap_letter", "substitute", "change_char", "letter_swap", "replace_letter"))
    a = g.const("a", "aeiourstln")
    b = g.const("b", "xyzqkwjv*#")
    doc = g.phrase((
        "Return s with every '{a}' replaced by '{b}'.",
        "Replace each occurrence of the character '{a}' in s with '{b}' and return the result.",
        "Change all '{a}' characters of s into '{b}'.",
        "Return a copy of s where '{a}' becomes '{b}'.",
        "Substitute '{b}' for every '{a}' in the string.",
        "Turn each '{a}' of s into a '{b}' and return the string.",
    )).format(a=a, b=b)
    body = f"    result = ''\n    for ch in s:\n        result += '{b}' if ch == '{a}' else ch\n    return result\n"
    inputs = _many(g.rng, lambda: (_sentence(g.rng, 1, 3),), 6, [("",)])
    return Spec(f"def {name}(s: str) -> str:", doc, body, inputs)


def _starts_with(g: Gen) -> Spec:
    name = g.name(("starts_with", "filter_prefix", "words_from", "initial_filter", "pick_words", "select_prefix"))
    c = g.const("c", "abcdefgilmoprst")
    var = g.variant(("starts",), ("ends",))
    doc = g.phrase((
        "Return the words of the list that {v} with the letter '{c}', in order.",
        "Keep only the strings that {v} with '{c}' and return them.",
        "Given a list of words, return those that {v} with '{c}'.",
        "Return a list of every word that {v} with '{c}'.",
        "Filter words down to the ones that {v} with the character '{c}'.",
        "Which words {v} with '{c}'? Return them as a list, keeping their order.",
    )).format(v="start" if var == "starts" else "end", c=c)
    method = "startswith" if var == "starts" else "endswith"
    body = f"    result = []\n    for w in words:\n        if w.{method}('{c}'):\n            result.append(w)\n    return result\n"
    inputs = _many(g.rng, lambda: (_words(g.rng, 2, 7),), 6, [([],)])
    return Spec(f"def {name}(words: List[str]) -> List[str]:", doc, body, inputs, NUM_LIST)


def _word_lengths(g: Gen) -> Spec:
    name = g.name(("long_word_lengths", "word_sizes", "lengths_over", "measure_words", "size_of_long", "lens"))
    k = g.const("k", range(2, 8))
    doc = g.phrase((
        "Return the lengths of the words in the sentence s that have more than {k} letters, in order.",
        "Split s on spaces and return the length of every word longer than {k} characters.",
        "For each word of s with more than {k} letters, record its length; return the list.",
        "Return a list of word lengths, keeping only words longer than {k}.",
        "Measure the words of s that are longer than {k} letters and return their lengths.",
        "Give the lengths of all words of s with over {k} characters.",
    )).format(k=k)
    body = f"    result = []\n    for word in s.split():\n        if len(word) > {k}:\n            result.append(len(word))\n    return result\n"
    inputs = _many(g.rng, lambda: (_sentence(g.rng, 1, 6),), 6, [("",)])
    return Spec(f"def {name}(s: str) -> List[int]:", doc, body, inputs, NUM_LIST)


def _shout_long(g: Gen) -> Spec:
    name = g.name(("shout_long", "upper_long_words", "emphasize", "caps_long", "loud_words", "raise_long"))
    k = g.const("k", range(2, 8))
    var = g.variant(("upper",), ("reverse",))
    act = "in upper case" if var == "upper" else "reversed"
    doc = g.phrase((
        "Return the sentence s with every word longer than {k} letters written {a}. Words are separated by single spaces.",
        "Rewrite each word of s that has more than {k} characters {a}, leave the other words alone, and return it.",
        "Words of s longer than {k} letters should appear {a}; return the new sentence.",
        "Return s where each word with over {k} letters is {a}.",
        "Put every word longer than {k} characters {a} and join the words with spaces.",
        "Change the words of s longer than {k} so they are {a}; return the sentence.",
    )).format(k=k, a=act)
    change = "word.upper()" if var == "upper" else "word[::-1]"
    body = (f"    result = []\n    for word in s.split(' '):\n        if len(word) > {k}:\n"
            f"            result.append({change})\n        else:\n            result.append(word)\n    return ' '.join(result)\n")
    inputs = _many(g.rng, lambda: (_sentence(g.rng, 1, 5),), 6, [("",)])
    return Spec(f"def {name}(s: str) -> str:", doc, body, inputs)


def _pad_left(g: Gen) -> Spec:
    name = g.name(("pad_left", "left_fill", "justify", "fill_to", "pad_number", "widen"))
    k = g.const("k", range(3, 12))
    c = g.const("c", "0*.-_#")
    doc = g.phrase((
        "Pad the string s on the left with '{c}' until it is {k} characters long. Longer strings are returned unchanged.",
        "Return s right-aligned in a field of width {k}, filled with '{c}' on the left.",
        "Add '{c}' characters in front of s so that its length becomes {k}; never shorten s.",
        "Return s with enough leading '{c}' to reach length {k}.",
        "Left-pad s to {k} characters using '{c}'.",
        "Fill s from the left with '{c}' up to a length of {k}.",
    )).format(k=k, c=c)
    body = f"    while len(s) < {k}:\n        s = '{c}' + s\n    return s\n"
    inputs = _many(g.rng, lambda: (g.rng.choice((str(g.rng.randint(0, 9999)), g.rng.choice(WORDS))),), 6, [("",)])
    return Spec(f"def {name}(s: str) -> str:", doc, body, inputs)


def _clamp(g: Gen) -> Spec:
    name = g.name(("clamp_all", "limit_values", "clip_list", "bound", "squeeze", "cap_values"))
    lo = g.const("lo", range(0, 10))
    hi = g.const("hi", range(12, 30))
    doc = g.phrase((
        "Return numbers with each value clamped to the range {lo} to {hi}: smaller values become {lo}, larger ones {hi}.",
        "Limit every element to be at least {lo} and at most {hi}, and return the new list.",
        "Clip the list so no value is below {lo} or above {hi}.",
        "Return a list where values under {lo} are raised to {lo} and values over {hi} are lowered to {hi}.",
        "Bound each integer between {lo} and {hi} inclusive.",
        "Cap the numbers at {hi} and floor them at {lo}; return the result.",
    )).format(lo=lo, hi=hi)
    body = (f"    result = []\n    for x in numbers:\n        if x < {lo}:\n            result.append({lo})\n"
            f"        elif x > {hi}:\n            result.append({hi})\n        else:\n            result.append(x)\n    return result\n")
    inputs = _many(g.rng, lambda: (_ints(g.rng, -10, 45, 1, 7),), 6, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> List[int]:", doc, body, inputs, NUM_LIST)


def _pair_sums(g: Gen) -> Spec:
    name = g.name(("count_pairs", "pairs_to_target", "two_sum_count", "matching_pairs", "pair_tally", "sum_pairs"))
    k = g.const("k", range(5, 30))
    doc = g.phrase((
        "Return how many pairs of positions i < j have numbers[i] + numbers[j] == {k}.",
        "Count the pairs of different positions whose values add up to {k}.",
        "Given a list of integers, return the number of index pairs (i < j) that sum to {k}.",
        "How many pairs i < j satisfy numbers[i] + numbers[j] == {k}? Return that number.",
        "Return the count of unordered position pairs with sum {k}.",
        "Count index pairs i < j for which the two elements total {k}.",
    )).format(k=k)
    body = (f"    count = 0\n    for i in range(len(numbers)):\n        for j in range(i + 1, len(numbers)):\n"
            f"            if numbers[i] + numbers[j] == {k}:\n                count += 1\n    return count\n")
    inputs = _many(g.rng, lambda: (_ints(g.rng, 0, k, 2, 7),), 6, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> int:", doc, body, inputs, NUM_LIST)


def _first_index(g: Gen) -> Spec:
    name = g.name(("first_above", "index_over", "find_first", "first_big", "locate_over", "first_past"))
    k = g.const("k", range(0, 20))
    var = g.variant(("first",), ("last",))
    doc = g.phrase((
        "Return the index of the {v} element of numbers greater than {k}, or -1 if there is none.",
        "Find the position of the {v} value larger than {k}; return -1 when no value is.",
        "Return where the {v} number above {k} is in the list (-1 if none).",
        "Give the index of the {v} integer exceeding {k}, or -1.",
        "Search numbers for the {v} item greater than {k} and return its index, -1 if missing.",
        "Return the {v} index i with numbers[i] > {k}; -1 if no such index exists.",
    )).format(v=var, k=k)
    if var == "first":
        body = f"    for i in range(len(numbers)):\n        if numbers[i] > {k}:\n            return i\n    return -1\n"
    else:
        body = f"    for i in range(len(numbers) - 1, -1, -1):\n        if numbers[i] > {k}:\n            return i\n    return -1\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, 0, 30, 1, 7),), 6, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> int:", doc, body, inputs, NUM_LIST)


def _fizz_word(g: Gen) -> Spec:
    name = g.name(("fizz_list", "mark_multiples", "word_for_multiples", "buzz_up_to", "tag_numbers", "label_list"))
    k = g.const("k", range(2, 10))
    w = g.const("w", ("Fizz", "Buzz", "Zap", "Pop", "Bing", "Hop", "Ding", "Zip", "Boom"))
    doc = g.phrase((
        "Return a list of strings for the numbers 1 to n: multiples of {k} become '{w}', other numbers their digits.",
        "For each i from 1 to n, write '{w}' if i is divisible by {k} and str(i) otherwise; return the list.",
        "Count from 1 to n, replacing every multiple of {k} with the word '{w}'. Return the strings.",
        "Return ['1', '2', ...] up to n, with '{w}' for numbers divisible by {k}.",
        "List the numbers 1..n as strings, but put '{w}' in place of the multiples of {k}.",
        "Build the sequence 1..n as text where multiples of {k} read '{w}'.",
    )).format(k=k, w=w)
    body = (f"    result = []\n    for i in range(1, n + 1):\n        if i % {k} == 0:\n            result.append('{w}')\n"
            f"        else:\n            result.append(str(i))\n    return result\n")
    inputs = _many(g.rng, lambda: (g.rng.randint(1, 12),), 6, [(0,)])
    return Spec(f"def {name}(n: int) -> List[str]:", doc, body, inputs, NUM_LIST)


def _gaps(g: Gen) -> Spec:
    name = g.name(("spaced_out", "steps_at_least", "wide_gaps", "climbs", "check_gaps", "grows_by"))
    k = g.const("k", range(1, 10))
    doc = g.phrase((
        "Return True if every element of numbers is at least {k} larger than the one before it, else False.",
        "Check that each number exceeds the previous one by {k} or more.",
        "Return whether the list increases by at least {k} at every step. Lists shorter than 2 give True.",
        "Is each item at least {k} greater than its predecessor? Return True or False.",
        "Return True when consecutive differences are all at least {k}.",
        "Decide if numbers climbs by {k} or more at each position.",
    )).format(k=k)
    body = f"    for i in range(1, len(numbers)):\n        if numbers[i] - numbers[i - 1] < {k}:\n            return False\n    return True\n"

    def make() -> tuple:
        xs = [g.rng.randint(0, 9)]
        for _ in range(g.rng.randint(1, 5)):
            xs.append(xs[-1] + g.rng.randint(max(0, k - 2), k + 3))
        return (xs,)

    inputs = _many(g.rng, make, 7, [([],), ([5],)])
    return Spec(f"def {name}(numbers: List[int]) -> bool:", doc, body, inputs, NUM_LIST)


def _frequent(g: Gen) -> Spec:
    name = g.name(("frequent", "repeated_values", "common_items", "at_least_k_times", "popular", "recurring"))
    k = g.const("k", range(2, 6))
    doc = g.phrase((
        "Return the distinct values that occur at least {k} times in numbers, in order of first appearance.",
        "Find every number that appears {k} or more times; list each once, in the order it first shows up.",
        "Return the values repeated at least {k} times (each once, first-appearance order).",
        "Give each integer whose count in the list is at least {k}, once, ordered by first occurrence.",
        "Collect the elements seen {k} or more times, without duplicates, in first-seen order.",
        "Which values occur at least {k} times? Return them in the order they first appear.",
    )).format(k=k)
    body = (f"    result = []\n    for x in numbers:\n        if numbers.count(x) >= {k} and x not in result:\n"
            f"            result.append(x)\n    return result\n")
    inputs = _many(g.rng, lambda: (_ints(g.rng, 0, 5, 3, 10),), 6, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> List[int]:", doc, body, inputs, NUM_LIST)


def _mod_sum(g: Gen) -> Spec:
    name = g.name(("sum_mod", "remainder_total", "mod_total", "wrap_sum", "clock_sum", "residue"))
    k = g.const("k", range(3, 20))
    var = g.variant(("sum",), ("product",))
    doc = g.phrase((
        "Return the {v} of the elements of numbers modulo {k}.",
        "Compute the {v} of the list and return its remainder when divided by {k}.",
        "Return ({v} of numbers) % {k}.",
        "Give the remainder of the {v} of all values after division by {k}.",
        "Take the {v} of the integers and reduce it modulo {k}.",
        "Return the {v} of numbers, mod {k}.",
    )).format(v=var, k=k)
    if var == "sum":
        body = f"    total = 0\n    for x in numbers:\n        total += x\n    return total % {k}\n"
    else:
        body = f"    total = 1\n    for x in numbers:\n        total *= x\n    return total % {k}\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, 0, 30, 1, 6),), 6, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> int:", doc, body, inputs, NUM_LIST)


def _count_words_len(g: Gen) -> Spec:
    name = g.name(("count_words_of_len", "words_with_len", "exact_length", "len_matches", "sized_words", "n_letter"))
    k = g.const("k", range(2, 8))
    doc = g.phrase((
        "Return how many words of the sentence s have exactly {k} letters.",
        "Count the words in s whose length is {k}.",
        "Split s into words and return the number with exactly {k} characters.",
        "Return the count of {k}-letter words in s.",
        "How many words in s are {k} characters long? Return it.",
        "Count words of length {k} in the text.",
    )).format(k=k)
    body = f"    count = 0\n    for word in s.split():\n        if len(word) == {k}:\n            count += 1\n    return count\n"
    inputs = _many(g.rng, lambda: (_sentence(g.rng, 1, 7),), 6, [("",)])
    return Spec(f"def {name}(s: str) -> int:", doc, body, inputs)


def _powers(g: Gen) -> Spec:
    name = g.name(("power_all", "raise_each", "exponentiate", "pow_list", "lift_values", "powers"))
    k = g.const("k", range(2, 6))
    var = g.variant(("list",), ("sum",))
    doc = g.phrase((
        "Return {v} every element of numbers raised to the power {k}.",
        "Raise each integer to the {k}-th power and return {v} the results.",
        "Compute x ** {k} for every x in the list; return {v} those values.",
        "Return {v} the {k}-th powers of the numbers.",
        "Take every value to the power of {k} and give back {v} them.",
        "Return {v} the elements, each to the power {k}.",
    )).format(k=k, v="a list of" if var == "list" else "the sum of")
    if var == "list":
        body = f"    result = []\n    for x in numbers:\n        result.append(x ** {k})\n    return result\n"
    else:
        body = f"    total = 0\n    for x in numbers:\n        total += x ** {k}\n    return total\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, -4, 9, 1, 5),), 6, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> {'List[int]' if var == 'list' else 'int'}:", doc, body, inputs,
                NUM_LIST)


def _to_base(g: Gen) -> Spec:
    name = g.name(("to_base", "convert_base", "base_digits", "in_base", "rebase", "write_in_base"))
    k = g.const("k", range(2, 10))
    doc = g.phrase((
        "Return the non-negative integer n written in base {k} as a string of digits.",
        "Convert n >= 0 to base {k} and return the digits as a string.",
        "Write n in base {k}; return '0' for zero.",
        "Return the base-{k} representation of n.",
        "Give the digits of n in base {k} as text.",
        "Express n in base {k} and return it as a string.",
    )).format(k=k)
    body = (f"    if n == 0:\n        return '0'\n    digits = ''\n    while n > 0:\n        digits = str(n % {k}) + digits\n"
            f"        n = n // {k}\n    return digits\n")
    inputs = _many(g.rng, lambda: (g.rng.randint(1, 300),), 6, [(0,)])
    return Spec(f"def {name}(n: int) -> str:", doc, body, inputs)


def _running_total(g: Gen) -> Spec:
    name = g.name(("running_total", "prefix_sums", "cumulative", "accumulate", "partial_sums", "tally_up"))
    k = g.const("k", range(0, 12))
    doc = g.phrase((
        "Return the running totals of numbers, starting the total at {k}.",
        "Start from {k}, add the elements one by one and return the total after each addition.",
        "Return a list whose i-th entry is {k} plus the sum of the first i + 1 elements.",
        "Give the cumulative sums of the list with an initial value of {k}.",
        "Accumulate numbers onto {k} and list every intermediate total.",
        "Return prefix sums of numbers, each offset by {k}.",
    )).format(k=k)
    body = f"    total = {k}\n    result = []\n    for x in numbers:\n        total += x\n        result.append(total)\n    return result\n"
    inputs = _many(g.rng, lambda: (_ints(g.rng, -5, 15, 1, 6),), 6, [([],)])
    return Spec(f"def {name}(numbers: List[int]) -> List[int]:", doc, body, inputs, NUM_LIST)


def _count_substring(g: Gen) -> Spec:
    name = g.name(("count_pattern", "occurrences", "find_all", "pattern_hits", "substring_count", "times_seen"))
    pat = g.const("pat", ("ab", "aa", "an", "ba", "ea", "oo", "re", "st", "in", "na", "ll", "ss"))
    doc = g.phrase((
        "Return how many times '{p}' occurs in s, counting overlapping occurrences.",
        "Count every position where the substring '{p}' starts in s (overlaps count).",
        "Return the number of (possibly overlapping) occurrences of '{p}' in s.",
        "How often does '{p}' appear in s, overlaps included? Return it.",
        "Count the places in s where '{p}' begins.",
        "Return the overlapping count of '{p}' inside s.",
    )).format(p=pat)
    body = f"    count = 0\n    for i in range(len(s) - 1):\n        if s[i:i + 2] == '{pat}':\n            count += 1\n    return count\n"
    inputs = _many(g.rng, lambda: ("".join(g.rng.choice("abenrstlo") for _ in range(g.rng.randint(2, 12))),), 7,
                   [("",), (pat * 3,)])
    return Spec(f"def {name}(s: str) -> int:", doc, body, inputs)


FamilyFn = Callable[[Gen], Spec]
FAMILIES: dict[str, FamilyFn] = {
    "sum_filtered": _sum_filtered, "count_filtered": _count_filtered, "rotate_string": _rotate_string,
    "count_letters": _count_letters, "scale_list": _scale_list, "keep_divisible": _keep_divisible,
    "largest_below": _largest_below, "repeat_chars": _repeat_chars, "caesar": _caesar, "every_kth": _every_kth,
    "chunk_sums": _chunk_sums, "digit_count": _digit_count, "replace_char": _replace_char,
    "starts_with": _starts_with, "word_lengths": _word_lengths, "shout_long": _shout_long, "pad_left": _pad_left,
    "clamp": _clamp, "pair_sums": _pair_sums, "first_index": _first_index, "fizz_word": _fizz_word,
    "gaps": _gaps, "frequent": _frequent, "mod_sum": _mod_sum, "count_words_len": _count_words_len,
    "powers": _powers, "to_base": _to_base, "running_total": _running_total, "count_substring": _count_substring,
}


# --- rendering ----------------------------------------------------------------------------------------------------


def _docstring(doc: str, examples: list[tuple[str, str]]) -> str:
    lines = textwrap.wrap(doc, width=96)
    out = '    """ ' + lines[0] + "\n"
    out += "".join(f"    {line}\n" for line in lines[1:])
    for call, result in examples:
        out += f"    >>> {call}\n    {result}\n"
    return out + '    """\n'


def _call(name: str, args: tuple) -> str:
    return f"{name}({', '.join(repr(a) for a in args)})"


def render(spec: Spec, entry_point: str, task_id: str) -> dict:
    """The HumanEval record for ``spec``; expected values come from running the canonical solution."""
    head = spec.imports + spec.signature + "\n"
    namespace: dict[str, Any] = {}
    exec(head + '    """"""\n' + spec.body, namespace)  # our own generated code, not model output
    fn = namespace[entry_point]
    results = [fn(*args) for args in spec.inputs]
    examples = spec.examples if spec.examples is not None else \
        [(_call(entry_point, a), repr(r)) for a, r in zip(spec.inputs[:N_EXAMPLES], results)]
    if spec.check_lines is None:
        checks = [f"    assert candidate({', '.join(repr(a) for a in args)}) == {r!r}"
                  for args, r in zip(spec.inputs, results)]
    else:
        checks = spec.check_lines
    n_asserts = sum(line.lstrip().startswith("assert ") for line in checks)
    if n_asserts < MIN_ASSERTS:  # pragma: no cover - a family bug
        raise DllmError(f"{task_id}: only {n_asserts} asserts, need {MIN_ASSERTS}")
    return {
        "task_id": task_id,
        "prompt": head + _docstring(spec.doc, examples),
        "entry_point": entry_point,
        "canonical_solution": spec.body,
        "test": "\n\ndef check(candidate):\n" + "\n".join(checks) + "\n",
    }


def _derive_seed(seed: int, split: str) -> int:
    digest = hashlib.sha256(f"dllm-workload/humaneval-format/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def all_families() -> dict[str, FamilyFn]:
    """Plain families plus the dependency (multi-answer) families, by name."""
    from dllm.evals.generators.dependency import FAMILIES as DEPENDENCY_FAMILIES

    return {**FAMILIES, **DEPENDENCY_FAMILIES}


def generate(split: str, n: int, seed: int = 0, with_meta: bool = False) -> list[dict]:
    """``n`` problems of ``split``, ids ``SynthEval/0..n-1``; deterministic in ``seed`` and prefix-stable in ``n``.

    Test prompts are distinct (a family whose held-out pools run dry stops contributing). The train split is an
    i.i.d. stream that may repeat a prompt: a dependency problem has few prompts and many valid answers, and
    seeing the same prompt with different answers is what teaches the spread marginals. Families take turns in
    rounds (each round a fresh random order), dependency families included, so each family has about
    ``n / len(families)`` problems."""
    check_choice("split", split, SPLITS)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise DllmError(f"n must be a non-negative integer, got {n!r}")
    families = all_families()
    names = list(families)
    rng = random.Random(_derive_seed(seed, split))
    seen: set[str] = set()
    out: list[dict] = []
    attempts = 0
    order: list[str] = []
    misses: dict[str, int] = {}
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 1000:
            raise DllmError(f"could not draw {n} distinct {split} HumanEval-format problems; ask for fewer")
        if not order:  # every family once per round, in a fresh random order: balanced at any n
            order = rng.sample(names, len(names))
        family = order.pop()
        g = Gen(rng, split, {"family": family})
        spec = families[family](g)
        entry = spec.signature[4:spec.signature.index("(")]
        rec = render(spec, entry, f"{TASK_PREFIX}/{len(out)}")
        if split == "test":
            if rec["prompt"] in seen:
                misses[family] = misses.get(family, 0) + 1
                if misses[family] < 50:  # retry this family next (balanced rounds) unless it is exhausted
                    order.append(family)
                continue
            seen.add(rec["prompt"])
        if with_meta:
            rec["meta"] = g.meta
        out.append(rec)
    return out
