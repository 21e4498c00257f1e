"""Building blocks shared by the HumanEval-format generators (``humaneval_format``, ``dependency``): split-aware
draws, the problem spec before rendering, and common input pools."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from dllm.errors import DllmError

SPLITS: tuple[str, ...] = ("train", "test")
MIN_ASSERTS: int = 5
N_EXAMPLES: int = 2
TEST_VARIANT_SHARE: float = 0.4
TASK_PREFIX = "SynthEval"


def held_out(options: Sequence[Any], split: str) -> list[Any]:
    """The entries of ``options`` that ``split`` may use: every third one (index % 3 == 2) is test-only."""
    if len(options) < 3:
        raise DllmError(f"a split-aware choice needs at least 3 options, got {list(options)!r}")
    return [o for i, o in enumerate(options) if (i % 3 == 2) == (split == "test")]


@dataclass
class Gen:
    """Split-aware draws for one problem; what was drawn lands in ``meta``."""

    rng: random.Random
    split: str
    meta: dict[str, Any] = field(default_factory=dict)

    def const(self, key: str, options: Sequence[Any]) -> Any:
        value = self.rng.choice(held_out(options, self.split))
        self.meta.setdefault("consts", {})[key] = value
        return value

    def name(self, options: Sequence[str]) -> str:
        value = self.rng.choice(held_out(options, self.split))
        self.meta["name"] = value
        return value

    def phrase(self, options: Sequence[str]) -> str:
        value = self.rng.choice(held_out(options, self.split))
        self.meta["phrasing"] = list(options).index(value)
        return value

    def variant(self, train: Sequence[str], test_only: Sequence[str] = ()) -> str:
        if self.split == "test" and test_only and self.rng.random() < TEST_VARIANT_SHARE:
            value, held = self.rng.choice(list(test_only)), True
        else:
            value, held = self.rng.choice(list(train)), False
        self.meta["variant"], self.meta["variant_held_out"] = value, held
        return value


@dataclass
class Spec:
    """One problem before rendering: ``inputs`` are argument tuples; the first ``N_EXAMPLES`` become the
    docstring's ``>>>`` examples, every one becomes an assert."""

    signature: str  # "def name(args) -> type:"
    doc: str
    body: str  # indented, newline-terminated
    inputs: list[tuple]
    imports: str = ""
    check_lines: list[str] | None = None  # custom asserts (dependency families); replace the computed ones
    examples: list[tuple[str, str]] | None = None  # custom ``>>>`` lines (dependency families)


WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "tiger", "lemon", "chair", "music", "ocean", "pixel", "green", "quiet",
    "sun", "map", "owl", "key", "ant", "box", "cat", "dog", "sky", "tree", "moon", "fish", "book", "lamp",
    "bread", "window", "garden", "planet", "rocket", "silver", "yellow", "button", "candle", "forest", "jungle",
    "anchor", "island", "orange", "eagle", "idea", "umbrella", "echo", "oak", "ice", "arm", "egg", "rain",
)

#: imports line of problems over ``List[int]``
NUM_LIST = "from typing import List\n\n\n"
