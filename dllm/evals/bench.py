"""The benchmark plug-in contract and registry.

A benchmark is one module in ``dllm.evals.benchmarks`` that registers a :class:`Benchmark` subclass with
``@BENCHMARKS.register(name, summary, options=[...])``. The class says everything the runner and the report need:

* ``load_samples(model, limit, data, chat, **options) -> list[Sample]``: data loading and prompt building
  (``Sample.ids`` are the exact token ids the model sees);
* ``score(sample, completion, **options) -> (scores, extras)``: ``scores`` has the keys ``score_keys``
  (booleans), ``extras`` at least ``postprocessed`` (the text that was scored or executed);
* ``score_keys`` / ``primary_metric``: the accuracy columns and the one used for frontiers and AUP;
* ``columns``: the report's accuracy columns as ``(header, score key)``; ``summary_extras(records)`` adds
  bench-specific summary fields (e.g. per-family accuracy) and ``extra_columns(rows)`` their report columns;
* ``default_lengths(model)`` / ``default_chat(model)`` / ``data_fingerprint(data, options)``.

The declared options (e.g. GSM8K's ``num_fewshot``) come in validated, with defaults filled in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dllm.api import default_chat
from dllm.errors import DllmError
from dllm.registry import Registry

BENCHMARKS = Registry("benchmark", "dllm.evals.benchmarks")

#: lengths of text benchmarks when neither the user nor the checkpoint says otherwise (Fast-dLLM's)
TEXT_BENCH_DEFAULTS = {"gen_length": 256, "block_length": 32, "steps": 256}


@dataclass
class Sample:
    id: Any
    index: int
    prompt: str  #: the exact text the model sees
    ids: list[int]  #: its token ids
    ref: Any  #: the example / document / problem
    extra: dict[str, Any] = field(default_factory=dict)  #: copied into the sample's record


class Benchmark:
    """Base class of benchmark plug-ins (see the module docstring); the defaults suit a text benchmark."""

    name = "benchmark"
    score_keys: tuple[str, ...] = ("correct",)
    primary_metric = "correct"
    columns: tuple[tuple[str, str], ...] = (("acc %", "correct"),)
    #: whether ``--data`` applies (a generated suite has no data file)
    takes_data = True
    #: the shipped checkpoint ``dllm eval`` runs when no ``--model`` is given (a name in ``dllm.assets.SHIPPED``)
    default_model = "tiny-llada"

    def default_lengths(self, model: Any) -> dict[str, int]:
        return dict(TEXT_BENCH_DEFAULTS)

    def default_chat(self, model: Any) -> bool:
        return default_chat(model)

    def data_fingerprint(self, data: str | os.PathLike | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """What of the data settings changes results (part of the store's fingerprint)."""
        return {"data": os.path.abspath(os.fspath(data)) if data is not None else None, **options}

    def load_samples(self, model: Any, *, limit: int | None, data: str | os.PathLike | None, chat: bool,
                     **options: Any) -> list[Sample]:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, sample: Sample, completion: str, **options: Any) -> tuple[dict[str, bool], dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def summary_extras(self, records: Sequence[dict]) -> dict[str, Any]:
        return {}

    def extra_columns(self, rows: Sequence[dict]) -> list[tuple[str, Any]]:
        """Report columns beyond ``columns``: ``(header, row -> fraction or None)``."""
        return []


def get_benchmark(name: str) -> tuple[Benchmark, Any]:
    """The benchmark instance and its registry entry (one-line error for an unknown name)."""
    entry = BENCHMARKS.get(name)
    return entry.factory(), entry


def tokenize(model: Any, text: str, add_special_tokens: bool) -> list[int]:
    """Token ids of a rendered prompt (one-line errors for a model without tokenizer or an empty prompt)."""
    tok = model.tokenizer
    if tok is None:
        raise DllmError(f"model {model.name_or_path!r} ships no tokenizer; benchmarks need one")
    ids = tok(text, add_special_tokens=add_special_tokens)["input_ids"]
    if not ids:
        raise DllmError(f"prompt {text[:40]!r} tokenizes to nothing")
    return list(ids)


__all__ = ["BENCHMARKS", "Benchmark", "Sample", "TEXT_BENCH_DEFAULTS", "get_benchmark", "tokenize"]
