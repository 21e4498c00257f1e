"""Seeded generators of a realistic decoding workload: GSM8K-format word problems and HumanEval-format code
problems (including multi-answer "dependency" problems), scored by :mod:`dllm.evals.gsm8k` and
:mod:`dllm.evals.humaneval` unchanged.

Why: the shipped synthetic suite answers in 16 tokens; LLaDA's reported workload answers in 40-150 tokens inside
a 256-token window. These generators give that shape at a size a small model can learn (see the modules).

API: :func:`gsm8k_problems` and :func:`humaneval_problems` (named apart from the ``gsm8k_format`` and
``humaneval_format`` modules, which a same-named function would shadow as package attributes).

Shipped files (``dllm/assets/workload/``, written by ``python scripts/make_workload.py`` with ``SEED``):

* ``GSM8K_TEST``: ``gsm8k_problems("test", GSM8K_TEST_SIZE, SEED)``
* ``GSM8K_FEWSHOT``: ``gsm8k_problems("train", GSM8K_FEWSHOT_SIZE, SEED)``, the few-shot pool for
  ``gsm8k.load_fewshot_pool(fewshot_path=GSM8K_FEWSHOT)``. (``dllm eval --bench gsm8k --data GSM8K_TEST`` has no
  few-shot file option today and draws examples from the other test records, i.e. from held-out templates.)
* ``HUMANEVAL_TEST``: ``humaneval_problems("test", HUMANEVAL_TEST_SIZE, SEED)``
* ``TOKENIZER_DIR``: :func:`dllm.training.subword.build_workload_tokenizer` with ``SEED``

The train splits are not shipped; generate them on demand (prefix-stable, so any ``n`` extends the same stream),
e.g. ``gsm8k_problems("train", 200_000, seed=SEED)``, or ``python scripts/make_workload.py --train-out DIR``.
"""

from __future__ import annotations

from pathlib import Path

from dllm.evals.generators import gsm8k_format as _gsm8k_format_module
from dllm.evals.generators import humaneval_format as _humaneval_format_module

SEED: int = 0
"""The seed the shipped files are generated with."""
GSM8K_TEST_SIZE: int = 500
GSM8K_FEWSHOT_SIZE: int = 64
HUMANEVAL_TEST_SIZE: int = 200

WORKLOAD_DIR: Path = Path(__file__).resolve().parents[2] / "assets" / "workload"
GSM8K_TEST: Path = WORKLOAD_DIR / "gsm8k_format_test.jsonl"
GSM8K_FEWSHOT: Path = WORKLOAD_DIR / "gsm8k_format_fewshot.jsonl"
HUMANEVAL_TEST: Path = WORKLOAD_DIR / "humaneval_format_test.jsonl"
TOKENIZER_DIR: Path = WORKLOAD_DIR / "tokenizer"


def gsm8k_problems(split: str = "test", n: int = GSM8K_TEST_SIZE, seed: int = SEED, with_meta: bool = False) -> list[dict]:
    """GSM8K-schema records ``{"question", "answer"}`` (plus ``"meta"`` if asked); see ``gsm8k_format`` module."""
    return _gsm8k_format_module.generate(split, n, seed, with_meta=with_meta)


def humaneval_problems(split: str = "test", n: int = HUMANEVAL_TEST_SIZE, seed: int = SEED,
                     with_meta: bool = False) -> list[dict]:
    """HumanEval-schema problems (plus ``"meta"`` if asked); see the ``humaneval_format`` module."""
    return _humaneval_format_module.generate(split, n, seed, with_meta=with_meta)


__all__ = [
    "SEED", "GSM8K_TEST_SIZE", "GSM8K_FEWSHOT_SIZE", "HUMANEVAL_TEST_SIZE", "WORKLOAD_DIR", "GSM8K_TEST",
    "GSM8K_FEWSHOT", "HUMANEVAL_TEST", "TOKENIZER_DIR", "gsm8k_problems", "humaneval_problems",
]
