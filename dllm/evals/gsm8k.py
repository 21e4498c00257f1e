"""GSM8K the way lm-eval's ``gsm8k`` task (v3.0) runs it, which is what Fast-dLLM reports.

Prompt: k few-shot examples ``"Question: {q}\\nAnswer: {full CoT answer}"`` joined by blank lines, then
``"Question: {q}\\nAnswer:"``; optionally the whole string as one user message of a chat template (Fast-dLLM's
LLaDA-Instruct setup). Scoring: lm-eval's two filters, ``strict-match`` and ``flexible-extract``, with its
exact-match normalisation.

Few-shot pool: the ``train`` split when loading from the hub (as lm-eval). With a local file, a separate few-shot
file if given, otherwise the other documents of the same file; a document is never its own example. Examples are
drawn per document with a ``random.Random`` seeded by ``(seed, question)``, so a prompt does not depend on the
order, sharding or resumption of a run. (lm-eval draws from one shared RNG in document order, so its exact
example choice is not reproduced.)
"""

from __future__ import annotations

import os
import random
import re
from typing import Any

from dllm.errors import DllmError
from dllm.evals.jsonl import read_objects

HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"
STOP_SEQUENCES: list[str] = ["Question:", "</s>", "<|im_end|>"]
DEFAULT_NUM_FEWSHOT = 5
DEFAULT_SEED = 1234  # lm-eval's default few-shot seed

_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval gsm8k exact_match: regexes_to_ignore, applied in order, then lower-casing.
_IGNORE = [re.compile(r","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$")]


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        raise DllmError(f"GSM8K file {path!r} does not exist; pass a JSONL file with 'question' and 'answer' fields")
    docs = []
    for lineno, doc in read_objects(path, "GSM8K", "with string fields 'question' and 'answer'"):
        if not isinstance(doc.get("question"), str) or not isinstance(doc.get("answer"), str):
            raise DllmError(f"GSM8K file {path!r} line {lineno} needs string fields 'question' and 'answer'")
        docs.append(doc)
    return docs


def _load_hub(split: str) -> list[dict]:
    if split not in ("train", "test"):
        raise DllmError(f"unknown GSM8K split {split!r}; choose one of: train, test")
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DllmError("loading GSM8K from the hub needs the datasets package: pip install datasets") from exc
    ds = datasets.load_dataset(HUB_ID, HUB_CONFIG, split=split)
    return [{"question": row["question"], "answer": row["answer"]} for row in ds]


def load_gsm8k(path: str | os.PathLike | None = None, split: str = "test", limit: int | None = None) -> list[dict]:
    """Documents ``{"id", "question", "answer"}`` (``id`` = position in the split/file).

    ``path=None`` loads ``openai/gsm8k`` (config ``main``) split ``split`` through ``datasets``; a local JSONL
    path is read as is (``split`` is then ignored). ``limit`` keeps the first ``limit`` documents.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise DllmError(f"limit must be a positive integer or None, got {limit!r}")
    docs = _load_hub(split) if path is None else _read_jsonl(os.fspath(path))
    if limit is not None:
        docs = docs[:limit]
    return [{**doc, "id": doc.get("id", i)} for i, doc in enumerate(docs)]


def load_fewshot_pool(
    path: str | os.PathLike | None = None, fewshot_path: str | os.PathLike | None = None
) -> list[dict]:
    """Where few-shot examples come from: ``fewshot_path`` if given, else the hub train split (``path=None``),
    else every document of the local file ``path`` (:func:`select_fewshot` skips the document being asked)."""
    if fewshot_path is not None:
        return load_gsm8k(fewshot_path)
    if path is None:
        return load_gsm8k(None, split="train")
    return load_gsm8k(path)


def _same_doc(a: dict, b: dict) -> bool:
    return a["question"].strip() == b["question"].strip()


def select_fewshot(doc: dict, pool: list[dict], k: int = DEFAULT_NUM_FEWSHOT, seed: int = DEFAULT_SEED) -> list[dict]:
    """``k`` examples from ``pool``, never ``doc`` itself (matched by question text), fixed per (seed, question)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise DllmError(f"num_fewshot must be a non-negative integer, got {k!r}")
    if k == 0:
        return []
    candidates = [p for p in pool if not _same_doc(p, doc)]
    if len(candidates) < k:
        raise DllmError(f"num_fewshot {k} is more than the {len(candidates)} few-shot examples available")
    rng = random.Random(f"{seed}\x00{doc['question']}")
    return rng.sample(candidates, k)


def format_question(doc: dict) -> str:
    return f"Question: {doc['question']}\nAnswer:"


def format_example(doc: dict) -> str:
    return f"{format_question(doc)} {doc['answer']}"


def build_prompt(
    doc: dict,
    fewshot: list[dict] | None = None,
    tokenizer: Any = None,
    chat: bool = False,
) -> str:
    """lm-eval's context: examples and the question joined by blank lines; ``chat=True`` wraps it all as one
    user message through ``tokenizer.apply_chat_template`` (with the generation prompt)."""
    parts = [format_example(ex) for ex in (fewshot or [])]
    parts.append(format_question(doc))
    text = "\n\n".join(parts)
    if not chat:
        return text
    if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        raise DllmError("chat=True needs a tokenizer with a chat template; pass tokenizer=... or use chat=False")
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def postprocess(text: str, stop: list[str] | None = None) -> str:
    """Cut the generation at the earliest occurrence of any stop sequence."""
    cut = len(text)
    for s in STOP_SEQUENCES if stop is None else stop:
        pos = text.find(s)
        if s and pos != -1:
            cut = min(cut, pos)
    return text[:cut]


def _pick(match: tuple | str) -> str | None:
    """lm-eval's RegexFilter: of a multi-group match take the first non-empty group."""
    if isinstance(match, tuple):
        match = next((m for m in match if m), None)
    return match.strip() if match is not None else None


def extract_strict(text: str) -> str | None:
    """strict-match: the first ``#### N``; ``None`` when absent (lm-eval's ``[invalid]``)."""
    found = _STRICT.findall(text)
    return _pick(found[0]) if found else None


def extract_flexible(text: str) -> str | None:
    """flexible-extract: the last number-like token anywhere; ``None`` when there is none."""
    found = _FLEXIBLE.findall(text)
    return _pick(found[-1]) if found else None


def normalize(text: str) -> str:
    """lm-eval's exact-match normalisation: drop ``,`` and ``$``, everything up to ``#### ``, a trailing ``.``;
    lower-case."""
    for pattern in _IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def reference_answer(doc: dict) -> str:
    """The normalised gold answer (the number after ``#### ``)."""
    return normalize(doc["answer"])


def score(doc: dict, completion: str) -> dict[str, bool]:
    """``{"strict_match", "flexible_extract"}`` for one (already stop-truncated) completion."""
    gold = reference_answer(doc)
    strict, flexible = extract_strict(completion), extract_flexible(completion)
    return {
        "strict_match": strict is not None and normalize(strict) == gold,
        "flexible_extract": flexible is not None and normalize(flexible) == gold,
    }
