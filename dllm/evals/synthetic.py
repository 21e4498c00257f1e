"""Synthetic ParallelBench-style tasks with exact scoring, small enough for CPU models.

Why: ParallelBench (furiosa-ai) shows that parallel unmasking breaks exactly where answer tokens depend
on each other. These families give unique-answer tasks with growing token dependency (``copy`` <
``reverse`` < ``sort`` < ``add`` with carries < ``gsm-mini`` word problems) that a tiny character-level
model can learn, so decoding policies can be compared on accuracy vs tokens-per-forward on a CPU.

A unique-answer task is, in principle, safe to decode in parallel: once a model is good enough, every
position's marginal is near one-hot and one forward can commit them all (a converged tiny model does exactly
that). ``shuffle`` is ParallelBench's counter-example: any rearrangement of the input is right, so each
position's marginal is spread over the input's characters and positions committed together, each from its
own marginal, pick the same character (with the uniform marginals that random rearrangements teach, one
step over n distinct characters succeeds with probability n!/n^n even when sampled, about 9% for n = 4).
It is where more tokens per step must cost accuracy.

Prompt formats (every character is in the char tokenizer of ``dllm.training.tokenizer``):

* ``copy``     ``copy:ab3k=``         -> ``ab3k``   (3-8 chars from a-z0-9)
* ``reverse``  ``reverse:ab3k=``      -> ``k3ba``
* ``sort``     ``sort:8315=``         -> ``1358``   (3-8 digits, or 3-8 letters a-z; ascending, repeats kept)
* ``add``      ``add:123+45=``        -> ``168``    (operands of 1-4 digits)
* ``gsm-mini`` ``Q: Tom has 3 apples and buys 5 more. How many apples does Tom have? A:`` -> ``8``
* ``shuffle``  ``shuffle:ab3k=``      -> ``k3ab`` or any other rearrangement of the (4-8 distinct) input
  characters except the input itself; ``answer`` holds one random valid rearrangement, ``score`` accepts all

The answer follows the prompt directly (no separator space) and is at most 12 characters.

Canvas layout (a trial run scored 0% when evaluation differed from training): training and evaluation
must use the same layout, ``prompt tokens`` + an answer region of exactly ``ANSWER_LENGTH`` tokens,
where the answer is followed by EOS tokens filling the rest of the region. Evaluate with
``gen_length == ANSWER_LENGTH`` and cut the completion at the first EOS (``score`` does this).

Splits: the test split is drawn from a seed derived from the base seed and is prefix-stable (the first
``n`` test examples are the same for any ``n_per_family``). The train split is an endless i.i.d. stream
from another derived seed that skips every prompt in the first ``TEST_POOL_SIZE`` test examples, so no
test prompt (for the same base seed) is ever trained on.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dllm.errors import DllmError, check_choice

FAMILIES: tuple[str, ...] = ("copy", "reverse", "sort", "add", "gsm-mini", "shuffle")
SPLITS: tuple[str, ...] = ("train", "test")
ANSWER_LENGTH: int = 16
"""Answer-region length in tokens, shared by training and evaluation (answer + EOS fill)."""
MAX_ANSWER_CHARS: int = 12
TEST_POOL_SIZE: int = 1000
"""Test prompts per family that the train split excludes; also the largest allowed test split."""
EOS_MARKERS: tuple[str, ...] = ("<|eos|>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>", "</s>", "<|pad|>")
"""End-of-text markers at which ``score`` cuts a completion (ours plus common LLaDA/Dream/Llama ones)."""

T = TypeVar("T")

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"


@dataclass(frozen=True)
class SyntheticExample:
    """One task instance: the model sees ``prompt`` and must produce exactly ``answer``."""

    family: str
    prompt: str
    answer: str
    id: str


def _rand_string(rng: random.Random, alphabet: str, lo: int = 3, hi: int = 8) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _copy(rng: random.Random) -> tuple[str, str]:
    s = _rand_string(rng, _ALNUM)
    return f"copy:{s}=", s


def _reverse(rng: random.Random) -> tuple[str, str]:
    s = _rand_string(rng, _ALNUM)
    return f"reverse:{s}=", s[::-1]


def _sort(rng: random.Random) -> tuple[str, str]:
    s = _rand_string(rng, _DIGITS if rng.random() < 0.5 else _LETTERS)
    return f"sort:{s}=", "".join(sorted(s))


def _number(rng: random.Random, max_digits: int = 4) -> int:
    """Digit count uniform first, so short and long operands (and carries) are equally common."""
    d = rng.randint(1, max_digits)
    return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)


def _add(rng: random.Random) -> tuple[str, str]:
    a, b = _number(rng), _number(rng)
    return f"add:{a}+{b}=", str(a + b)


_NAMES = ("Tom", "Ann", "Sam", "Mia", "Ben", "Lily", "Max", "Zoe", "Leo", "Eva")
_ITEMS = ("apples", "pens", "books", "coins", "cards", "eggs", "balls", "cups")
# (template, op): op "+" gives a + b, "-" gives a - b with b <= a so answers are never negative.
_GSM_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("{n} has {a} {i} and buys {b} more. How many {i} does {n} have?", "+"),
    ("{n} has {a} {i}. {m} has {b} {i}. How many {i} do they have together?", "+"),
    ("A box has {a} {i}. {n} puts in {b} more. How many {i} are in the box?", "+"),
    ("{n} has {a} {i} and gives {b} to {m}. How many {i} does {n} have now?", "-"),
    ("A box has {a} {i}. {n} takes out {b}. How many {i} are in the box?", "-"),
    ("{n} has {a} {i}. {m} has {b} fewer. How many {i} does {m} have?", "-"),
    ("{n} has {a} {i} and loses {b}. How many {i} are left?", "-"),
)


def _gsm_mini(rng: random.Random) -> tuple[str, str]:
    template, op = rng.choice(_GSM_TEMPLATES)
    n, m = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    if op == "-" and b > a:
        a, b = b, a
    question = template.format(n=n, m=m, i=item, a=a, b=b)
    return f"Q: {question} A:", str(a + b if op == "+" else a - b)


def _shuffle(rng: random.Random) -> tuple[str, str]:
    s = "".join(rng.sample(_ALNUM, rng.randint(4, 8)))
    while (answer := "".join(rng.sample(s, len(s)))) == s:
        pass
    return f"shuffle:{s}=", answer


_GENERATORS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "copy": _copy,
    "reverse": _reverse,
    "sort": _sort,
    "add": _add,
    "gsm-mini": _gsm_mini,
    "shuffle": _shuffle,
}


_PROMPT_PATTERNS: dict[str, re.Pattern[str]] = {
    "copy": re.compile(r"copy:[a-z0-9]+="),
    "reverse": re.compile(r"reverse:[a-z0-9]+="),
    "sort": re.compile(r"sort:(?:[0-9]+|[a-z]+)="),
    "add": re.compile(r"add:[0-9]+\+[0-9]+="),
    "gsm-mini": re.compile(r"Q: .+\? A:"),
    "shuffle": re.compile(r"shuffle:([a-z0-9]+)="),
}
PROMPT_EXAMPLES: tuple[str, ...] = ("add:12+34=", "copy:ab3k=", "reverse:ab3k=", "sort:8315=", "shuffle:ab3k=",
                                    "Q: Tom has 3 apples and buys 5 more. How many apples does Tom have? A:")
"""One prompt per family, in the exact format the shipped tiny models were trained on."""


def _valid_shuffle(prompt: str, text: str) -> bool:
    """ParallelBench's rule: any rearrangement of the input's characters other than the input itself."""
    source = _PROMPT_PATTERNS["shuffle"].fullmatch(prompt).group(1)
    return sorted(text) == sorted(source) and text != source


_VALIDATORS: dict[str, Callable[[str, str], bool]] = {"shuffle": _valid_shuffle}
MULTI_ANSWER_FAMILIES: tuple[str, ...] = tuple(_VALIDATORS)
"""Families whose ``answer`` is one of several right ones (``score`` checks validity, not equality)."""


def prompt_family(prompt: str) -> str | None:
    """The family whose prompt format ``prompt`` follows, or None (the tiny models know nothing else)."""
    for family, pattern in _PROMPT_PATTERNS.items():
        if pattern.fullmatch(prompt):
            return family
    return None


def _derive_seed(seed: int, split: str, family: str) -> int:
    """Stable per-(split, family) seed; hashlib, not hash(), so it does not depend on PYTHONHASHSEED."""
    digest = hashlib.sha256(f"dllm-synthetic/{seed}/{split}/{family}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def generate_examples(family: str, n: int, seed: int) -> list[SyntheticExample]:
    """Return ``n`` examples with distinct prompts, deterministic in ``seed`` and prefix-stable in ``n``."""
    check_choice("family", family, FAMILIES)
    if n < 0:
        raise DllmError(f"n must be >= 0, got {n}")
    gen = _GENERATORS[family]
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[SyntheticExample] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise DllmError(f"could not draw {n} distinct {family!r} prompts; ask for fewer")
        prompt, answer = gen(rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append(SyntheticExample(family, prompt, answer, f"{family}-{len(out)}"))
    return out


def _train_examples(family: str, n: int, seed: int) -> list[SyntheticExample]:
    """I.i.d. stream (repeats allowed) that skips every prompt of the family's test pool."""
    banned = {ex.prompt for ex in generate_examples(family, TEST_POOL_SIZE, _derive_seed(seed, "test", family))}
    gen = _GENERATORS[family]
    rng = random.Random(_derive_seed(seed, "train", family))
    out: list[SyntheticExample] = []
    while len(out) < n:
        prompt, answer = gen(rng)
        if prompt not in banned:
            out.append(SyntheticExample(family, prompt, answer, f"{family}-{len(out)}"))
    return out


def load_split(
    split: str = "test",
    n_per_family: int = 100,
    families: Iterable[str] | None = None,
    seed: int = 0,
) -> list[SyntheticExample]:
    """Examples of ``split`` for each family (in ``FAMILIES`` order unless given), ``n_per_family`` each.

    The test split is never trained on: ``split="train"`` excludes the first ``TEST_POOL_SIZE`` test
    prompts of the same base ``seed``, and test splits larger than that are refused.
    """
    check_choice("split", split, SPLITS)
    fams = FAMILIES if families is None else tuple(families)
    for fam in fams:
        check_choice("family", fam, FAMILIES)
    if n_per_family < 0:
        raise DllmError(f"n_per_family must be >= 0, got {n_per_family}")
    if split == "test" and n_per_family > TEST_POOL_SIZE:
        raise DllmError(f"n_per_family {n_per_family} too large for the test split; at most {TEST_POOL_SIZE}")
    out: list[SyntheticExample] = []
    for fam in fams:
        if split == "test":
            out.extend(generate_examples(fam, n_per_family, _derive_seed(seed, "test", fam)))
        else:
            out.extend(_train_examples(fam, n_per_family, seed))
    return out


def interleave_families(items: Sequence[T], n_per_family: int) -> list[T]:
    """``items`` in ``load_split``'s order (one family after another, ``n_per_family`` each: examples or their
    prompt ids) round-robin over the families instead: the first of every family, then the second, ..."""
    families = len(items) // n_per_family if n_per_family else 0
    return [items[f * n_per_family + k] for k in range(n_per_family) for f in range(families)]


def _cut_at_eos(completion: str) -> str:
    cut = len(completion)
    for marker in EOS_MARKERS:
        pos = completion.find(marker)
        if pos != -1:
            cut = min(cut, pos)
    return completion[:cut]


def score(example: SyntheticExample, completion: str) -> bool:
    """Exact match after cutting at the first end-of-text marker and stripping whitespace; for ``shuffle``,
    any rearrangement of the input's characters other than the input itself (ParallelBench's rule)."""
    text = _cut_at_eos(completion).strip()
    if example.family in _VALIDATORS:
        return _VALIDATORS[example.family](example.prompt, text)
    return text == example.answer.strip()
