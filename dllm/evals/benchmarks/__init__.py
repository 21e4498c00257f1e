"""Built-in benchmarks, one module each (``dllm.evals.bench.BENCHMARKS``); a new benchmark is one new file here
that registers a ``dllm.evals.bench.Benchmark`` subclass (see CONTRIBUTING.md)."""

#: listed first
LISTING_ORDER = ("synthetic", "gsm8k", "humaneval")
