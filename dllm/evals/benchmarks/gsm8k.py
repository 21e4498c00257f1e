"""``gsm8k``: grade-school math with lm-eval's prompts, few-shot selection and answer extraction
(``dllm.evals.gsm8k``): strict (``#### N``) and flexible (last number) match."""

from __future__ import annotations

from typing import Any

from dllm.assets import is_shipped
from dllm.evals import generators
from dllm.evals import gsm8k as lib
from dllm.evals.bench import BENCHMARKS, Benchmark, Sample, tokenize
from dllm.registry import Option


@BENCHMARKS.register(
    "gsm8k", "GSM8K (lm-eval prompts): strict '#### N' and flexible last-number match",
    options=[
        Option("num_fewshot", lib.DEFAULT_NUM_FEWSHOT, "few-shot examples drawn from the train split", kind=int, low=0),
        Option("fewshot_seed", lib.DEFAULT_SEED, "seed of the few-shot draw (lm-eval's default)", kind=int),
        Option("fewshot_data", None, "JSONL file of few-shot examples (default: the data's train split; the "
               "shipped pool for the shipped GSM8K-format test set)", kind=str, nullable=True),
    ])
class GSM8K(Benchmark):
    name = "gsm8k"
    default_model = "workload-llada"
    score_keys = ("strict_match", "flexible_extract")
    primary_metric = "flexible_extract"
    columns = (("strict %", "strict_match"), ("flexible %", "flexible_extract"))

    def load_samples(self, model: Any, *, limit: int | None, data: Any, chat: bool, num_fewshot: int = 5,
                     fewshot_seed: int = lib.DEFAULT_SEED, fewshot_data: str | None = None) -> list[Sample]:
        """The first ``limit`` documents of ``data`` (a local JSONL), else of the shipped GSM8K-format test set
        for a shipped model (few-shot from its shipped train pool), else of the hub test split;
        ``num_fewshot``-shot, optionally as one chat user message. Without chat the tokenizer adds its own special
        tokens (a BOS where it adds one, as lm-eval's HF model); a chat template already contains them."""
        if data is None and is_shipped(getattr(model, "name_or_path", "")):
            data = generators.GSM8K_TEST
            fewshot_data = generators.GSM8K_FEWSHOT if fewshot_data is None else fewshot_data
        docs = lib.load_gsm8k(data, limit=limit)
        pool = lib.load_fewshot_pool(data, fewshot_path=fewshot_data) if num_fewshot > 0 else []
        samples = []
        for i, doc in enumerate(docs):
            shots = lib.select_fewshot(doc, pool, k=num_fewshot, seed=fewshot_seed)
            text = lib.build_prompt(doc, shots, tokenizer=model.tokenizer, chat=chat)
            samples.append(Sample(doc["id"], i, text, tokenize(model, text, not chat), doc,
                                  {"target": lib.reference_answer(doc)}))
        return samples

    def score(self, sample: Sample, completion: str, **options: Any) -> tuple[dict[str, bool], dict[str, Any]]:
        cut = lib.postprocess(completion)
        extracted = {"strict_match": lib.extract_strict(cut), "flexible_extract": lib.extract_flexible(cut)}
        return lib.score(sample.ref, cut), {"postprocessed": cut, "extracted": extracted}
