"""Train the shipped workload model: a small LLaDA-format model on the GSM8K- and HumanEval-format train splits.

Why: every figure the toolkit printed came from a 16-token, one-block suite. This model decodes at
LLaDA-Instruct's shape instead (chat prompts, ``gen_length`` 256 in blocks of 32, a 40-200 token answer then
EOS padding), so policies, caches and schedules can be measured on a workload that looks like real use.

Data (a pure function of the seed; the train splits of :mod:`dllm.evals.generators`, never the test files):

* GSM8K format: ``dllm.evals.gsm8k.build_prompt`` with ``k`` few-shot examples drawn from other train
  records (``k = 0`` with probability ``1 - fewshot_share``, else uniform in ``1..max_fewshot``), as one
  chat user message; target = the GSM8K answer (reasoning lines, then ``#### N``).
* HumanEval format: ``dllm.evals.humaneval.build_prompt`` as one chat user message; target = the full function
  in a ```` ```python ```` fence (prompt + canonical solution), as an instruct model answers.

Each target is followed by EOS up to ``gen_length``; the training canvas is ``dllm.engine.build_canvas``'s
evaluation canvas with that region filled, so training and decoding see the same layout.

Objective: :func:`dllm.training.diffusion.diffusion_loss` on the whole generated region (target and EOS
padding, as LLaDA's SFT masks the padding too). **Quirk** (vs LLaDA): the default ``weighting`` is ``mean``
(cross-entropy averaged over masked tokens) instead of LLaDA's ``1/t`` weighting, because on CPU budgets
small models stalled with ``1/t`` (measured in ``dllm/assets/README.md``); ``weighting="llada"`` is the
reference objective.

Runs resume: ``out/train_state.pt`` holds the float32 weights, optimizer, step and data position, so a
run cut by the clock continues where it stopped (``resume=True``, the default), across sessions.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dllm.engine import build_canvas
from dllm.errors import DllmError, check_choice
from dllm.evals import generators as wl
from dllm.evals import gsm8k as gsm8k_lib
from dllm.evals import humaneval as humaneval_lib
from dllm.models.base import DiffusionLM
from dllm.models.loading import build_model, special_tokens
from dllm.models.tiny import tiny_config
from dllm.training.diffusion import WEIGHTINGS, clone_as, diffusion_loss, length_buckets, lr_at

TASKS: tuple[str, ...] = ("gsm8k", "humaneval")


@dataclass
class WorkloadConfig:
    """Everything that determines a run (saved next to the checkpoint as ``train_config.json``)."""

    out: str = "runs/workload-llada"
    hidden: int = 192
    layers: int = 6
    heads: int = 6
    intermediate: int | None = None  #: default 3 * hidden (gated MLP)
    max_length: int = 1280  #: 5-shot chat prompts reach 790 tokens, plus 256 generated
    gen_length: int = 256
    block_length: int = 32  #: decoding default written to generation_config.json
    batch_size: int = 24
    buckets: int = 3  #: length buckets per batch (gradient accumulation), to skip padding work
    steps: int = 20000
    time_limit: float | None = None  #: seconds of training in this call; the cosine follows it when set
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    eps: float = 1e-3
    weighting: str = "mean"
    stratified_t: bool = True
    seed: int = 0
    n_gsm8k: int = 60000
    n_humaneval: int = 30000
    task_weights: dict[str, float] = field(default_factory=lambda: {"gsm8k": 0.6, "humaneval": 0.4})
    fewshot_share: float = 0.4
    max_fewshot: int = 5
    val_examples: int = 48
    val_every: int = 100
    save_every: float = 600.0  #: seconds between resumable train_state.pt saves
    log_every: int = 20
    threads: int = 2
    device: str = "cpu"  #: "cuda" trains in bfloat16 autocast (weights and optimizer stay float32)
    workers: int = 0  #: > 0: prebuild ``pool`` examples in this many processes first (for a fast GPU)
    pool: int = 200000  #: examples prebuilt when ``workers`` > 0; training samples from them with replacement
    dtype: str = "bfloat16"  #: dtype of the shipped checkpoint (training runs in float32)
    resume: bool = True
    init_from: str | None = None  #: start from this checkpoint's weights (e.g. the shipped one) with a new optimizer
    log_file: str | None = None


def validate(cfg: WorkloadConfig) -> None:
    """One-line ``DllmError`` for every bad value, before any work is done."""
    for name in ("hidden", "layers", "heads", "max_length", "gen_length", "block_length", "batch_size",
                 "buckets", "steps", "n_gsm8k", "n_humaneval", "val_examples", "val_every", "log_every", "threads"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise DllmError(f"{name} must be a positive integer, got {value!r}")
    if cfg.hidden % cfg.heads or (cfg.hidden // cfg.heads) % 2:
        raise DllmError(f"hidden {cfg.hidden} must split into {cfg.heads} heads of even size (RoPE)")
    if cfg.gen_length % cfg.block_length:
        raise DllmError(f"gen_length {cfg.gen_length} is not a multiple of block_length {cfg.block_length}")
    check_choice("weighting", cfg.weighting, WEIGHTINGS)
    for task, w in cfg.task_weights.items():
        check_choice("task", task, TASKS)
        if w < 0:
            raise DllmError(f"task weight for {task!r} must be >= 0, got {w}")
    if not any(w > 0 for w in cfg.task_weights.values()):
        raise DllmError("task_weights must give at least one task a positive weight")
    if not 0 <= cfg.fewshot_share <= 1:
        raise DllmError(f"fewshot_share must be in [0, 1], got {cfg.fewshot_share}")
    if not 0 < cfg.eps < 1:
        raise DllmError(f"eps must be in (0, 1), got {cfg.eps}")
    if not isinstance(cfg.workers, int) or cfg.workers < 0:
        raise DllmError(f"workers must be a non-negative integer, got {cfg.workers!r}")
    if cfg.device != "cpu" and not str(cfg.device).startswith("cuda"):
        raise DllmError(f"device {cfg.device!r} is not allowed; choose cpu or cuda[:N]")


# --------------------------------------------------------------------------------------------------------
# Data


class WorkloadData:
    """Samples ``(prompt ids, target ids + EOS padding)`` pairs from the train splits, seeded."""

    def __init__(self, cfg: WorkloadConfig, tokenizer: Any, eos: int, seed: int, n_gsm8k: int, n_humaneval: int):
        self.cfg, self.tok, self.eos, self.seed = cfg, tokenizer, eos, seed
        self.prebuilt: list[tuple[list[int], list[int]]] | None = None
        self.rng = random.Random(seed)
        self.gsm8k = wl.gsm8k_problems("train", n_gsm8k, seed)
        self.humaneval = wl.humaneval_problems("train", n_humaneval, seed)
        self.tasks = [t for t in TASKS if cfg.task_weights.get(t, 0) > 0]
        self.weights = [cfg.task_weights[t] for t in self.tasks]

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _padded(self, target: str) -> list[int]:
        ids = self._ids(target)
        if len(ids) >= self.cfg.gen_length:
            raise DllmError(f"a target of {len(ids)} tokens does not fit gen_length {self.cfg.gen_length} with an EOS")
        return ids + [self.eos] * (self.cfg.gen_length - len(ids))

    def example(self, task: str | None = None) -> tuple[list[int], list[int]]:
        rng = self.rng
        task = task or rng.choices(self.tasks, self.weights)[0]
        if task == "gsm8k":
            doc = rng.choice(self.gsm8k)
            k = rng.randint(1, self.cfg.max_fewshot) if rng.random() < self.cfg.fewshot_share else 0
            shots = [d for d in rng.sample(self.gsm8k, k + 1) if d is not doc][:k]
            text = gsm8k_lib.build_prompt(doc, shots, tokenizer=self.tok, chat=True)
            return self._ids(text), self._padded(doc["answer"])
        problem = rng.choice(self.humaneval)
        text = humaneval_lib.build_prompt(problem, tokenizer=self.tok, chat=True)
        return self._ids(text), self._padded(humaneval_target(problem))

    def batch(self, n: int) -> list[tuple[list[int], list[int]]]:
        if self.prebuilt:
            return [self.prebuilt[self.rng.randrange(len(self.prebuilt))] for _ in range(n)]
        return [self.example() for _ in range(n)]

    def prebuild(self, n: int, workers: int) -> None:
        """Draw ``n`` examples in ``workers`` processes (worker ``i`` seeded ``(seed, i)``), so a GPU step does not
        wait on prompt rendering; :meth:`batch` then samples from them."""
        import multiprocessing as mp

        per = [n // workers + (i < n % workers) for i in range(workers)]
        jobs = [(asdict(self.cfg), self.seed, i, k) for i, k in enumerate(per)]
        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_prebuild_part, jobs)
        self.prebuilt = [pair for part in parts for pair in part]


def _prebuild_part(job: tuple[dict, int, int, int]) -> list[tuple[list[int], list[int]]]:
    cfg_dict, seed, index, n = job
    cfg = WorkloadConfig(**cfg_dict)
    tok = load_workload_tokenizer()
    data = WorkloadData(cfg, tok, tok.convert_tokens_to_ids("<|endoftext|>"), seed, cfg.n_gsm8k, cfg.n_humaneval)
    data.rng = random.Random(f"{seed}/{index}")
    return [data.example() for _ in range(n)]


def humaneval_target(problem: dict) -> str:
    """What an instruct model answers to a HumanEval-format prompt: the whole function in a python fence."""
    return "```python\n" + problem["prompt"] + problem["canonical_solution"] + "```"


def load_workload_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(wl.TOKENIZER_DIR))


def model_config(cfg: WorkloadConfig, tokenizer: Any) -> dict[str, Any]:
    """LLaDA's published config with small dims and the workload tokenizer's special ids."""
    c = tiny_config("llada", vocab_size=len(tokenizer), hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                    intermediate=cfg.intermediate or 3 * cfg.hidden, max_length=cfg.max_length)
    ids = tokenizer.convert_tokens_to_ids
    c.update(mask_token_id=ids("<|mdm_mask|>"), eos_token_id=ids("<|endoftext|>"), pad_token_id=ids("<|pad|>"),
             rope_theta=10000.0)
    return c


# --------------------------------------------------------------------------------------------------------
# Loss over a batch split into length buckets


def batch_loss(model: DiffusionLM, pairs: list[tuple[list[int], list[int]]], cfg: WorkloadConfig,
               gen: torch.Generator, backward: bool) -> float:
    """Mean loss of ``pairs`` (buckets of similar prompt length, each weighted by its share of the batch)."""
    total = 0.0
    for indices in length_buckets(list(range(len(pairs))), [len(p) for p, _ in pairs], cfg.buckets):
        group = [pairs[i] for i in indices]
        device = next(model.parameters()).device
        canvas, key_mask, positions, gen_start = build_canvas(model, [p for p, _ in group], cfg.gen_length, device)
        canvas[:, gen_start:] = torch.tensor([a for _, a in group], dtype=torch.long, device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = diffusion_loss(model, canvas, key_mask, positions, gen_start, cfg.eps, gen,
                                  stratified=cfg.stratified_t, weighting=cfg.weighting) * (len(group) / len(pairs))
        if backward:
            loss.backward()
        total += float(loss.detach())
    return total


def save_shipped(model: DiffusionLM, directory: Path, cfg: WorkloadConfig, info: dict[str, Any]) -> None:
    """``save_pretrained`` in ``cfg.dtype`` with the tokenizer, LLaDA-Instruct decoding defaults and the run record."""
    from dllm.models.loading import resolve_dtype

    directory.mkdir(parents=True, exist_ok=True)
    clone_as(model, resolve_dtype(cfg.dtype, torch.device("cpu"))).save_pretrained(directory)
    model.tokenizer.save_pretrained(directory)
    defaults = {"gen_length": cfg.gen_length, "block_length": cfg.block_length, "steps": cfg.gen_length, "chat": True}
    (directory / "generation_config.json").write_text(
        json.dumps({"_from_model_config": True, "dllm": defaults}, indent=2) + "\n")
    (directory / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    (directory / "train_metrics.json").write_text(json.dumps(info, indent=2) + "\n")


# --------------------------------------------------------------------------------------------------------
# Training loop


def train_workload(cfg: WorkloadConfig) -> Path:
    """Train (or resume) and keep the checkpoint with the lowest validation loss in ``out/best``.

    Validation: ``val_examples`` pairs drawn once from train splits of seed ``seed + 1`` (a different stream
    from training; the shipped test files are never touched), scored with a fixed masking seed so values
    compare across steps. Returns ``out``.
    """
    validate(cfg)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = Path(cfg.log_file) if cfg.log_file else out / "train.log"

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with log_path.open("a") as fh:
            fh.write(line + "\n")

    tok = load_workload_tokenizer()
    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg, tok), seed=cfg.seed).to(cfg.device)
    if cfg.init_from and not (cfg.resume and (out / "train_state.pt").exists()):
        from dllm.models.loading import load_model

        start = load_model(cfg.init_from, device="cpu", dtype="float32")
        shapes = {k: tuple(v.shape) for k, v in start.state_dict().items()}
        if shapes != {k: tuple(v.shape) for k, v in model.state_dict().items()}:
            raise DllmError(f"init_from {cfg.init_from!r} has other dimensions than hidden {cfg.hidden}, "
                            f"{cfg.layers} layers, vocabulary {len(tok)}")
        model.load_state_dict(start.state_dict())
        log(f"initialised from {cfg.init_from}")
    model.tokenizer = tok
    model.special = special_tokens(model.config, tok, "train")
    eos = model.special.eos
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    state_path = out / "train_state.pt"
    step, elapsed_before, history, best = 0, 0.0, [], math.inf
    data = WorkloadData(cfg, tok, eos, cfg.seed, cfg.n_gsm8k, cfg.n_humaneval)
    if cfg.resume and state_path.exists():
        state = torch.load(state_path, weights_only=False, map_location=cfg.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed_before, history, best = state["step"], state["elapsed"], state["history"], state["best"]
        data.rng.setstate(state["data_rng"])
        log(f"resumed at step {step} ({elapsed_before:.0f} s trained, best val {best:.4f})")
    if cfg.workers:
        t0 = time.time()
        data.prebuild(cfg.pool, cfg.workers)
        log(f"prebuilt {cfg.pool} examples in {time.time() - t0:.0f} s with {cfg.workers} workers")
    val_data = WorkloadData(cfg, tok, eos, cfg.seed + 1, 2000, 1000)
    val_pairs = val_data.batch(cfg.val_examples)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: hidden {cfg.hidden}, {cfg.layers} layers, {cfg.heads} heads, {n_params:,} parameters; "
        f"batch {cfg.batch_size}, lr {cfg.lr}, weighting {cfg.weighting}")
    model.train().requires_grad_(True)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + step)

    def validate_now() -> float:
        model.eval()
        with torch.no_grad():
            v = sum(batch_loss(model, val_pairs[i:i + cfg.batch_size], cfg, torch.Generator().manual_seed(1234 + i),
                               backward=False) * min(cfg.batch_size, len(val_pairs) - i)
                    for i in range(0, len(val_pairs), cfg.batch_size)) / len(val_pairs)
        model.train()
        return v

    def save_state(elapsed: float) -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed,
                    "history": history, "best": best, "data_rng": data.rng.getstate()}, tmp)
        tmp.replace(state_path)

    # the cosine schedule runs over the whole run (all calls): elapsed counts earlier calls' training time
    start, last_save, train_losses = time.time(), time.time(), []
    time_budget = (elapsed_before + cfg.time_limit) if cfg.time_limit else None
    sched = replace(cfg, time_limit=time_budget)
    while step < cfg.steps:
        elapsed = elapsed_before + time.time() - start
        if time_budget is not None and elapsed >= time_budget:
            break
        lr = lr_at(step, sched, elapsed)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = batch_loss(model, data.batch(cfg.batch_size), cfg, gen, backward=True)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        train_losses.append(loss)
        if step % cfg.log_every == 0:
            log(f"step {step} loss {sum(train_losses) / len(train_losses):.4f} lr {lr:.2e} "
                f"{time.time() - start:.0f}s")
            train_losses = []
        if step % cfg.val_every == 0:
            v = validate_now()
            history.append({"step": step, "elapsed": round(elapsed, 1), "val_loss": round(v, 5), "lr": lr})
            mark = ""
            if v < best:
                best, mark = v, " (best)"
                save_shipped(model, out / "best", cfg, {"step": step, "val_loss": v, "history": history})
            log(f"step {step} val loss {v:.4f}{mark}")
        if time.time() - last_save > cfg.save_every:
            save_state(elapsed_before + time.time() - start)
            last_save = time.time()
    save_state(elapsed_before + time.time() - start)
    v = validate_now()
    history.append({"step": step, "elapsed": round(elapsed_before + time.time() - start, 1), "val_loss": round(v, 5)})
    if v < best:
        best = v
        save_shipped(model, out / "best", cfg, {"step": step, "val_loss": v, "history": history})
    save_shipped(model, out / "last", cfg, {"step": step, "val_loss": v, "history": history})
    save_state(elapsed_before + time.time() - start)
    log(f"done at step {step}: val loss {v:.4f}, best {best:.4f}")
    return out
