"""One benchmark run: prompts -> ``dllm.generate`` -> post-processing and scoring -> resumable records -> summary.

``evaluate(model, bench, policy, options, ...)`` runs one decoding configuration on one benchmark and returns its
summary. Everything is written under ``out_dir/<bench>/``:

* ``<tag>.jsonl``: one record per sample through :class:`~dllm.evals.store.ResultStore` (first line = run header
  with the config fingerprint). A rerun with the same settings skips the samples already there and gives the same
  summary; a rerun with settings that change results is refused (use another ``out_dir``).
* ``<tag>.summary.json``: the summary (also returned).

``<tag>`` names the decoding configuration (policy, options, cache, block schedule, lengths), so several policies
and sweep points live side by side; :func:`policy_tag` builds it.

Record fields: ``id``, ``index`` (position in the benchmark list), ``prompt`` (the exact text the model saw),
``completion`` (decoded answer: cut at the first end token, special tokens skipped), ``postprocessed`` (GSM8K: the
completion cut at the stop sequences; HumanEval: the sanitised program that was executed; synthetic: the answer
cut at the first end marker), ``scores`` (``{"correct"}``; ``{"strict_match", "flexible_extract"}``;
``{"passed"}``), ``nfe`` (forwards this row took part in = its NFE had it run alone), ``gen_tokens`` (tokens before
the first end token, :meth:`GenerationOutput.generated_counts`), ``latency_s`` (wall time of the batched
``generate`` call, tokenisation, scoring and warm-up excluded, divided evenly among the rows of that call),
``policy`` and ``options``, plus bench extras (``family``/``target`` for synthetic, ``target``/``extracted`` for
GSM8K, ``task_id``/``result`` for HumanEval).

Replay rows (``replay=True``, ``dllm eval --replay``): per static batch, the samples are decoded with ``lowconf``
one token per step (``steps = gen_length``, traced) with the run's cache and block schedule, then again with
``dllm.samplers.oracle.replay_policy`` of that decode: the fewest forwards that reproduce the one-token-per-step
output. The record's ``nfe`` is the replay's; it also holds ``reference_nfe`` and ``fallbacks`` (forwards that
committed a reference token the model did not predict), and ``latency_s`` is null: the replay needs the answer
first, so its wall time measures nothing. Its texts equal the reference's (checked per batch), so its accuracy is
that of one-token-per-step decoding with that cache. The tag starts with ``replay`` and the run config carries
``"replay": true``, so these records never mix with a ``lowconf`` run's.

Data parallel: under ``torchrun`` (or ``accelerate launch``) every rank evaluates every ``world_size``-th pending
sample and writes ``<tag>.rank<r>-of-<w>.jsonl``; after a barrier rank 0 merges the shards into ``<tag>.jsonl`` (in
benchmark order) and writes the summary, which every rank returns. The process group is created on first use
from ``RANK``/``WORLD_SIZE`` (gloo on CPU, nccl on CUDA) unless the caller made one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dllm.errors import DllmError
from dllm.evals.bench import Benchmark, Sample, get_benchmark
from dllm.evals.distributed import broadcast, dist_state, gather_flags, init_distributed, merge_shards, shard_paths
from dllm.evals.metrics import summary as metrics_summary
from dllm.evals.settings import Lengths, check_run, policy_tag, resolve_lengths, run_config
from dllm.evals.store import ResultStore, config_fingerprint

#: tag and record ``policy`` of replay runs (``evaluate(..., replay=True)``)
REPLAY = "replay"
#: the policy whose one-token-per-step output a replay run reproduces
REPLAY_REFERENCE = "lowconf"

TIMING_NOTE = (
    "latency_s per sample = wall time of its batched dllm.generate call (CUDA-synchronised; tokenisation, scoring "
    "and a warm-up call excluded) divided evenly among the rows of the call; tokens_per_s = total gen_tokens / "
    "total latency_s"
)

#: with continuous batching, one ``generate`` call decodes this many batches' worth of samples through
#: ``batch_size`` slots: records are written and the progress bar moves once per call (a killed run loses at most
#: one call), and the slots drain (the tail where finished slots have no next prompt) once per call
CONTINUOUS_BATCHES = 8


def call_size(batch_size: int, continuous: bool) -> int:
    """Samples per ``generate`` call: ``batch_size``, or ``CONTINUOUS_BATCHES`` times that when ``continuous``."""
    return batch_size * (CONTINUOUS_BATCHES if continuous else 1)


def load_samples(model: Any, bench: str, *, limit: int | None = None, data: str | os.PathLike | None = None,
                 chat: bool = False, **bench_options: Any) -> list[Sample]:
    """The benchmark's samples with prompts rendered and tokenized (``Benchmark.load_samples``), after checking
    ``limit`` and the bench's options; sample ids must be unique."""
    bench_obj, entry = get_benchmark(bench)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DllmError(f"limit must be a positive integer, got {limit!r}")
    if data is not None and not bench_obj.takes_data:
        raise DllmError(f"the {bench} bench generates its own data; --data is for benchmarks with data files")
    samples = bench_obj.load_samples(model, limit=limit, data=data, chat=chat, **entry.validate(bench_options))
    if not samples:
        raise DllmError(f"the {bench} data has no samples")
    ids = [s.id for s in samples]
    if len(set(map(str, ids))) != len(ids):
        raise DllmError(f"the {bench} data has duplicate sample ids")
    return samples


def check_fits(model: Any, samples: Sequence[Sample], gen_length: int) -> None:
    """One line before any file is written when the longest prompt plus ``gen_length`` exceeds the model."""
    longest = max((len(s.ids) for s in samples), default=0)
    limit = int(getattr(model, "max_length", 0) or 0)
    if limit and longest + gen_length > limit:
        raise DllmError(f"the longest prompt ({longest} tokens) + gen_length {gen_length} exceeds the model's maximum "
                        f"length {limit}; use a model with a longer context, fewer few-shot examples or a shorter "
                        "--gen-length")


_WARMED: set = set()


def _warmup(model: Any, sample: Sample, key: tuple, gen: Callable[..., Any]) -> None:
    """One untimed generate call with the run's exact settings, once per (model, settings) in this process, so
    lazy initialisation (allocator, kernels) is not billed to the first sample."""
    full = (id(model),) + key
    if full in _WARMED:
        return
    gen([sample.ids])
    _WARMED.add(full)


def evaluate(
    model: Any,
    bench: str,
    policy: str = "lowconf",
    policy_options: Mapping[str, Any] | None = None,
    *,
    cache: str = "none",
    block_schedule: str = "fixed",
    gen_length: int | None = None,
    block_length: int | None = None,
    steps: int | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    continuous: bool | None = None,
    out_dir: str | os.PathLike = "runs/eval",
    data: str | os.PathLike | None = None,
    chat: bool | None = None,
    seed: int = 0,
    progress: bool = True,
    warmup: bool = True,
    samples: Sequence[Sample] | None = None,
    replay: bool = False,
    **bench_options: Any,
) -> dict[str, Any]:
    """Run ``policy`` (with ``policy_options``, which may also hold cache/schedule options such as ``refresh``) on
    ``bench`` and return the summary (see the module docstring for files and record fields).

    Summary keys: ``bench``, ``tag``, ``policy``, ``options``, ``config`` (the fingerprinted run config),
    ``fingerprint``, ``n``, ``accuracy`` (``{score key: fraction}``), ``per_family`` (synthetic: ``{family:
    fraction}``), ``primary_metric``, ``total_tokens``, ``total_nfe``, ``mean_nfe`` (per sample), ``tpf``
    (total tokens / total per-row NFE), ``total_latency_s``, ``mean_latency_s``, ``tokens_per_s``, ``timing``
    (how latency is measured), ``records`` (the JSONL path). ``samples`` lets callers pass pre-loaded samples
    (from :func:`load_samples` with the same data settings) to avoid re-reading data for several runs;
    ``bench_options`` are the benchmark's declared options (e.g. GSM8K's few-shot count).

    ``batch_size`` rows decode at once; with ``continuous`` (default: on CUDA, see ``api.default_continuous``) a
    finished row's slot takes the next sample at once (continuous batching, ``dllm/batching.py``; each call then holds :func:`call_size` samples), without
    it the samples run in static batches. Records do not depend on either (each row decodes as it would alone).

    ``replay``: record the replay of ``lowconf`` one token per step instead (module docstring); ``policy`` must be
    ``lowconf``, ``policy_options`` may hold only cache and schedule options, ``steps`` defaults to (and must
    equal) ``gen_length``; batches are static (``continuous`` is ignored: the replay's targets are per batch).
    The summary then also has ``replay`` (true), ``fallbacks`` and ``reference_mean_nfe``.
    """
    from dllm.api import generate

    bench_obj, entry = get_benchmark(bench)
    bench_opts = entry.validate(bench_options)
    options = dict(policy_options or {})
    lengths = resolve_lengths(model, bench, gen_length, block_length, steps)
    if not isinstance(replay, bool):
        raise DllmError(f"replay must be true or false, got {replay!r}")
    if replay:
        lengths = _replay_lengths(policy, options, cache, block_schedule, lengths, steps)
    check_run(policy, options, cache, block_schedule, lengths)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DllmError(f"batch_size must be a positive integer, got {batch_size!r}")
    if continuous is None:
        from dllm.api import default_continuous

        continuous = default_continuous(model)
    if not isinstance(continuous, bool):
        raise DllmError(f"continuous must be true or false, got {continuous!r}")
    if replay:
        continuous = False  # the replay policy holds one batch's targets
    if chat is None:
        chat = bench_obj.default_chat(model)
    if samples is None:
        samples = load_samples(model, bench, limit=limit, data=data, chat=chat, **bench_opts)
    check_fits(model, samples, lengths.gen_length)
    tag = policy_tag(REPLAY if replay else policy, options, cache, block_schedule, lengths)
    config = run_config(model, bench, policy, options, cache=cache, block_schedule=block_schedule, lengths=lengths,
                        chat=chat, seed=seed, data=data, bench_options=bench_opts)
    if replay:
        config["replay"] = True  # only here, so the fingerprints of other runs are unchanged
    bench_dir = Path(out_dir) / bench
    main_path = bench_dir / f"{tag}.jsonl"
    order = {str(s.id): s.index for s in samples}
    rank, world = dist_state(model.device.type)

    # 1. rank 0 folds leftover shards of interrupted runs into the main file and learns what is done.
    done: set = set()
    if rank == 0:
        bench_dir.mkdir(parents=True, exist_ok=True)
        with ResultStore(main_path, config) as main:
            merge_shards(main, shard_paths(bench_dir, tag), config, order)
            done = {str(i) for i in main.done_ids()}
    done = broadcast(done, world)

    # 2. every rank decodes its share of the pending samples into its own file.
    todo = [s for s in samples if str(s.id) not in done]
    mine = todo[rank::world]
    store_path = main_path if world == 1 else bench_dir / f"{tag}.rank{rank}-of-{world}.jsonl"

    def gen(prompts: list[list[int]], decoder: Any = policy, **extra: Any):
        return generate(model, prompts, policy=decoder, gen_length=lengths.gen_length,
                        block_length=lengths.block_length, steps=lengths.steps, cache=cache,
                        block_schedule=block_schedule, seed=seed, stop_at_eos=True, batch_size=batch_size,
                        continuous=continuous, **extra, **options)

    def decode(batch: list[Sample]) -> tuple[Any, dict[str, list]]:
        """The batch's output and per-row extra record fields."""
        prompts = [s.ids for s in batch]
        if not replay:
            return gen(prompts), {}
        from dllm.samplers.oracle import fallback_counts, replay_policy

        ref = gen(prompts, trace=True)  # one static batch: the batch holds at most batch_size rows
        pol = replay_policy(ref)
        out = gen(prompts, pol)
        if out.texts != ref.texts:
            bad = next(s.id for s, a, b in zip(batch, out.texts, ref.texts) if a != b)
            raise DllmError(f"the replay of sample {bad!r} did not reproduce the one-token-per-step text; "
                            "this is a bug in dllm.samplers.oracle")
        return out, {"reference_nfe": [int(n) for n in ref.seq_nfe], "fallbacks": fallback_counts(pol)}

    error: BaseException | None = None
    try:
        with ResultStore(store_path, config) as store:
            mine = [s for s in mine if s.id not in store]
            if mine and warmup and not replay:  # a replay's time is not reported
                _warmup(model, mine[0], (bench, tag, json.dumps(config, sort_keys=True, default=str)), gen)
            bar = progress_bar(progress and rank == 0, f"{bench} {tag}", len(mine), world)
            with bar:
                size = call_size(batch_size, continuous)
                for start in range(0, len(mine), size):
                    batch = mine[start:start + size]
                    out, more = decode(batch)
                    texts = out.texts or [""] * len(batch)
                    counts = out.generated_counts()
                    per_row = None if replay else out.elapsed / len(batch)
                    for i, s in enumerate(batch):
                        scores, extras = bench_obj.score(s, texts[i], **bench_opts)
                        store.append({
                            "id": s.id, "index": s.index, "prompt": s.prompt, "completion": texts[i],
                            "postprocessed": extras.pop("postprocessed"), "scores": scores,
                            "nfe": int(out.seq_nfe[i]), "gen_tokens": int(counts[i]), "latency_s": per_row,
                            "policy": REPLAY if replay else policy, "options": dict(sorted(options.items())),
                            **{k: v[i] for k, v in more.items()}, **s.extra, **extras,
                        })
                    bar.advance(len(batch))
    except BaseException as exc:  # noqa: BLE001 - a failing rank must not leave the others waiting forever
        error = exc
        if world == 1:
            raise

    # 3. rank 0 merges the shards and summarises; every rank returns the same summary.
    if world > 1:
        failed = gather_flags(error is not None, world)
        if any(failed):
            if error is not None:
                raise error
            bad = ", ".join(str(r) for r, f in enumerate(failed) if f)
            raise DllmError(f"rank(s) {bad} failed; finished samples are kept, rerun to resume")
    result = None
    if rank == 0:
        with ResultStore(main_path, config) as main:
            if world > 1:
                merge_shards(main, shard_paths(bench_dir, tag), config, order)
            records = main.records()
        result = _summarize(bench_obj, bench, tag, policy, options, config, records, order, main_path)
        _write_json(bench_dir / f"{tag}.summary.json", result)
    return broadcast(result, world)


def _summarize(bench_obj: Benchmark, bench: str, tag: str, policy: str, options: Mapping[str, Any], config: Mapping[str, Any],
               records: list[dict], order: Mapping[str, int], path: Path) -> dict[str, Any]:
    """Summary over the records of this sample set, in benchmark order (records beyond ``limit`` are ignored)."""
    recs = sorted((r for r in records if str(r["id"]) in order), key=lambda r: order[str(r["id"])])
    missing = len(order) - len(recs)
    if missing:
        raise DllmError(f"{missing} samples of {tag} have no result; rerun to resume")
    flat = [{**r, **r["scores"]} for r in recs]
    base = metrics_summary(flat, score_keys=bench_obj.score_keys)
    out: dict[str, Any] = {
        "bench": bench, "tag": tag, "policy": policy, "options": dict(sorted(options.items())),
        "config": dict(config), "fingerprint": config_fingerprint(config),
        "n": base["n"], "accuracy": base["accuracy"], "primary_metric": bench_obj.primary_metric,
    }
    out.update(bench_obj.summary_extras(recs))
    out.update({k: base[k] for k in ("total_tokens", "total_nfe", "mean_nfe", "tpf", "total_latency_s",
                                     "mean_latency_s", "tokens_per_s")})
    out["timing"] = TIMING_NOTE
    if config.get("replay"):
        out["replay"] = True
        out["fallbacks"] = sum(int(r["fallbacks"]) for r in recs)
        out["reference_mean_nfe"] = sum(int(r["reference_nfe"]) for r in recs) / len(recs)
        out["timing"] = "replay: no wall time (it needs the one-token-per-step output first)"
    out["records"] = str(path)
    return out


def _replay_lengths(policy: str, options: Mapping[str, Any], cache: str, block_schedule: str, lengths: Lengths,
                    steps: int | None) -> Lengths:
    """A replay run's lengths (steps = gen_length), after refusing what would not decode one token per step."""
    from dllm.options import route_options

    if policy != REPLAY_REFERENCE:
        raise DllmError(f"replay reproduces {REPLAY_REFERENCE}'s one-token-per-step output; got policy {policy!r}")
    routed = route_options(policy, cache, block_schedule, options)
    if routed.policy:
        raise DllmError(f"replay decodes its reference with plain {REPLAY_REFERENCE}; policy option "
                        f"{sorted(routed.policy)[0]!r} does not apply (cache and schedule options do)")
    if steps is not None and steps != lengths.gen_length:
        raise DllmError(f"replay decodes its reference one token per step: steps must equal gen_length "
                        f"{lengths.gen_length}, got {steps}")
    return Lengths(lengths.gen_length, lengths.block_length, lengths.gen_length)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _NoBar:
    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, n: int) -> None:
        return None


class _Bar:
    """A Rich progress bar with ETA over this process's samples."""

    def __init__(self, description: str, total: int, world: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        suffix = f" (rank 0 of {world})" if world > 1 else ""
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
        )
        self._task = self._progress.add_task(description + suffix, total=total)

    def __enter__(self) -> "_Bar":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)


def progress_bar(show: bool, description: str, total: int, world: int = 1) -> Any:
    """A Rich progress bar with ETA on stderr (``with bar: bar.advance(n)``); a no-op when ``show`` is false."""
    return _Bar(description, total, world) if show and total > 0 else _NoBar()


__all__ = [
    "CONTINUOUS_BATCHES", "REPLAY", "REPLAY_REFERENCE", "Lengths", "Sample", "call_size",
    "check_fits", "evaluate", "progress_bar", "load_samples", "resolve_lengths", "policy_tag", "check_run", "run_config",
    "init_distributed", "dist_state",
]
