"""``synthetic``: the generated parallel-decoding suite (``dllm.evals.synthetic``), exact match per family."""

from __future__ import annotations

from typing import Any, Sequence

from dllm.api import chat_prompt
from dllm.errors import DllmError
from dllm.evals import synthetic as suite
from dllm.evals.bench import BENCHMARKS, Benchmark, Sample, tokenize

#: samples per family of the test split when no limit is given (the slice tiny-model training reports)
DEFAULT_PER_FAMILY = 100


@BENCHMARKS.register("synthetic", "generated copy/reverse/sort/add/gsm-mini/shuffle tasks, exact match (validity for shuffle)")
class Synthetic(Benchmark):
    name = "synthetic"
    score_keys = ("correct",)
    primary_metric = "correct"
    columns = (("acc %", "correct"),)
    takes_data = False

    def default_lengths(self, model: Any) -> dict[str, int]:
        """The checkpoint's generation defaults, else the 16-token answer region as one block, one token/step."""
        shipped = dict(getattr(model, "generation_defaults", None) or {})
        a = suite.ANSWER_LENGTH
        base = {"gen_length": shipped.get("gen_length", a), "block_length": shipped.get("block_length", a),
                "steps": shipped.get("steps", a)}
        if "gen_length" in shipped and "block_length" not in shipped:
            base["block_length"] = base["gen_length"]
        if "steps" not in shipped:
            base["steps"] = base["gen_length"]
        return base

    def default_chat(self, model: Any) -> bool:
        return False  # the tiny models were trained on bare prompts

    def data_fingerprint(self, data: Any, options: Any) -> dict[str, Any]:
        return {}

    def load_samples(self, model: Any, *, limit: int | None, data: Any, chat: bool, **options: Any) -> list[Sample]:
        """The test split, ``limit`` examples *per family* (default 100), prompts as is without special tokens
        (as in training)."""
        if data is not None:
            raise DllmError("the synthetic bench generates its own data; --data is for gsm8k and humaneval")
        n = DEFAULT_PER_FAMILY if limit is None else limit
        samples = []
        for i, ex in enumerate(suite.load_split("test", n_per_family=n)):
            text = chat_prompt(model, ex.prompt) if chat else ex.prompt
            samples.append(Sample(ex.id, i, text, tokenize(model, text, False), ex,
                                  {"family": ex.family, "target": ex.answer}))
        return samples

    def score(self, sample: Sample, completion: str, **options: Any) -> tuple[dict[str, bool], dict[str, Any]]:
        cut = suite._cut_at_eos(completion)
        return {"correct": suite.score(sample.ref, completion)}, {"postprocessed": cut.strip()}

    def summary_extras(self, records: Sequence[dict]) -> dict[str, Any]:
        fams: dict[str, list[bool]] = {}
        for r in records:
            fams.setdefault(r["family"], []).append(bool(r["scores"]["correct"]))
        return {"per_family": {f: sum(v) / len(v) for f, v in fams.items()}}

    def extra_columns(self, rows: Sequence[dict]) -> list[tuple[str, Any]]:
        fams = list((rows[0].get("per_family") or {}).keys()) if rows else []
        return [(f, lambda r, f=f: (r.get("per_family") or {}).get(f)) for f in fams]
