"""Masked-diffusion training of tiny LLaDA/Dream models on the synthetic suite (``dllm.evals.synthetic``).

Why: the package needs real (not random) small checkpoints so every decoding path can be checked for
accuracy on a CPU. The objective is LLaDA's SFT loss: per example ``t ~ U(eps, 1)``, every answer-region
token (answer characters then EOS up to ``ANSWER_LENGTH``) is masked with probability ``t`` (at least one),
the prompt never, and the cross-entropy on masked positions is weighted by ``1/t`` and normalised by the
answer-region length.

The training canvas is built with ``dllm.engine.build_canvas``, the very function the decoder uses (left
padding with a key mask, RoPE positions that skip the padding, prompt, then the answer region), because a
layout mismatch between training and evaluation scored 0% in a trial. Padding is invisible to the model
(masked keys, positions restart at the first real token), so batches are split into length buckets to avoid
paying for padding without changing what any row sees.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dllm.engine import build_canvas
from dllm.errors import DllmError, check_choice
from dllm.evals.synthetic import ANSWER_LENGTH, FAMILIES, SyntheticExample, load_split, score
from dllm.models.base import DiffusionLM
from dllm.models.loading import build_model, load_model, special_tokens
from dllm.models.tiny import tiny_config
from dllm.training.tokenizer import build_char_tokenizer

KINDS: tuple[str, ...] = ("llada", "dream")
#: Special ids of the char tokenizer (see ``dllm.training.tokenizer``).
CHAR_SPECIALS = {"pad": 0, "bos": 1, "eos": 2, "mask": 3}


@dataclass
class TrainConfig:
    """Everything that determines a run (saved next to the checkpoint as ``train_config.json``)."""

    kind: str = "llada"
    out: str = "runs/tiny-llada"
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    seed: int = 0
    hidden: int = 192
    layers: int = 4
    heads: int = 4
    intermediate: int | None = None  #: default 3 * hidden (gated MLP)
    max_length: int = 256
    families: tuple[str, ...] = FAMILIES
    family_weights: dict[str, float] | None = None  #: sampling weights; default uniform
    adaptive_mix: bool = True  #: after each eval, sample families in proportion to their error (with a floor)
    mix_floor: float = 0.15
    train_pool: int = 50000  #: training examples drawn per family (repeats allowed in the stream)
    eps: float = 1e-3
    weighting: str = "llada"  #: "llada": CE/t over the answer length; "mean": mean CE over masked tokens
    stratified_t: bool = False  #: spread the batch's t over (eps, 1) (each t still U(eps, 1)): less loss noise
    eval_every: int = 250
    eval_per_family: int = 20
    eval_offset: int = 100  #: held-out test slice starts after the examples that are reported
    log_every: int = 25
    buckets: int = 3  #: length buckets per batch (gradient accumulation), to skip padding work
    device: str = "cpu"
    threads: int = 2
    time_limit: float | None = None  #: seconds; stop early (the best checkpoint is kept)
    init_from: str | None = None  #: continue from a checkpoint directory instead of random init
    grow_layers: int = 0  #: with init_from: add this many zero-output blocks first (``dllm.training.growth``)
    dtype: str = "float32"  #: dtype of the saved checkpoint
    log_file: str | None = None


def model_config(cfg: TrainConfig, vocab_size: int) -> dict[str, Any]:
    """The published LLaDA/Dream config with small dims and the char tokenizer's special ids."""
    check_choice("kind", cfg.kind, KINDS)
    inter = cfg.intermediate or 3 * cfg.hidden
    c = tiny_config(cfg.kind, vocab_size=vocab_size, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                    intermediate=inter, max_length=cfg.max_length)
    c.update(mask_token_id=CHAR_SPECIALS["mask"], eos_token_id=CHAR_SPECIALS["eos"], pad_token_id=CHAR_SPECIALS["pad"])
    if cfg.kind == "dream":
        c.update(bos_token_id=CHAR_SPECIALS["bos"], rope_theta=10000.0)
    else:
        c.update(rope_theta=10000.0)
    return c


def validate(cfg: TrainConfig) -> None:
    """One-line ``DllmError`` for every bad value, before any work is done."""
    check_choice("kind", cfg.kind, KINDS)
    for name in ("steps", "batch_size", "hidden", "layers", "heads", "eval_every", "eval_per_family", "buckets", "threads"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise DllmError(f"{name} must be a positive integer, got {value!r}")
    for name in ("warmup", "train_pool"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < (1 if name == "train_pool" else 0):
            raise DllmError(f"{name} must be a {'positive' if name == 'train_pool' else 'non-negative'} integer, got {value!r}")
    if not isinstance(cfg.grow_layers, int) or cfg.grow_layers < 0:
        raise DllmError(f"grow_layers must be a non-negative integer, got {cfg.grow_layers!r}")
    if cfg.grow_layers and not cfg.init_from:
        raise DllmError("grow_layers needs init_from: it adds blocks to a trained checkpoint")
    if not cfg.mix_floor >= 0:
        raise DllmError(f"mix_floor must be >= 0, got {cfg.mix_floor}")
    if not cfg.lr > 0:
        raise DllmError(f"lr must be > 0, got {cfg.lr}")
    if cfg.hidden % cfg.heads:
        raise DllmError(f"hidden {cfg.hidden} is not divisible by heads {cfg.heads}")
    if (cfg.hidden // cfg.heads) % 2:
        raise DllmError(f"head dim {cfg.hidden // cfg.heads} must be even for RoPE")
    if not cfg.families:
        raise DllmError("families must name at least one family")
    for fam in cfg.families:
        check_choice("family", fam, FAMILIES)
    if cfg.family_weights:
        for fam, w in cfg.family_weights.items():
            check_choice("family", fam, cfg.families)
            if w < 0:
                raise DllmError(f"family weight for {fam!r} must be >= 0, got {w}")
    if cfg.eval_offset + cfg.eval_per_family > 1000:
        raise DllmError("eval_offset + eval_per_family must be at most 1000 (the test pool)")
    check_choice("weighting", cfg.weighting, WEIGHTINGS)
    if not 0 < cfg.eps < 1:
        raise DllmError(f"eps must be in (0, 1), got {cfg.eps}")


# --------------------------------------------------------------------------------------------------------
# Batches


def answer_ids(answer: str, tokenizer: Any, eos: int) -> list[int]:
    """Answer tokens then EOS up to ``ANSWER_LENGTH`` (the region the decoder fills)."""
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if len(ids) >= ANSWER_LENGTH:
        raise DllmError(f"answer {answer!r} does not fit the {ANSWER_LENGTH}-token answer region with an EOS")
    return ids + [eos] * (ANSWER_LENGTH - len(ids))


def training_canvas(model: DiffusionLM, prompts: list[list[int]], answers: list[list[int]], device: torch.device
                    ) -> tuple[Tensor, Tensor, Tensor, int]:
    """The clean canvas: exactly the evaluation canvas (``build_canvas``) with the answer region filled."""
    canvas, key_mask, positions, gen_start = build_canvas(model, prompts, ANSWER_LENGTH, device)
    canvas[:, gen_start:] = torch.tensor(answers, dtype=torch.long, device=device)
    return canvas, key_mask, positions, gen_start


def mask_answers(canvas: Tensor, gen_start: int, mask_id: int, eps: float, gen: torch.Generator,
                 stratified: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Mask each answer-region token with prob ``t ~ U(eps, 1)`` per row (at least one per row).

    ``stratified`` draws row i's t from the i-th of B equal strata, randomly assigned to rows: each t is
    still marginally U(eps, 1) but the batch covers the range evenly, which tames the 1/t-weighted loss.
    Returns (noisy canvas, masked [B, T] bool, t [B]). Prompt and padding are never masked.
    """
    b, total = canvas.shape
    n = total - gen_start
    u = torch.rand(b, generator=gen)
    if stratified:
        u = (torch.randperm(b, generator=gen) + u) / b
    t = eps + (1 - eps) * u
    masked = torch.rand(b, n, generator=gen) < t[:, None]
    forced = torch.randint(0, n, (b,), generator=gen)
    empty = ~masked.any(-1)
    masked[empty, forced[empty]] = True
    full = torch.zeros(b, total, dtype=torch.bool)
    full[:, gen_start:] = masked
    full = full.to(canvas.device)
    noisy = torch.where(full, torch.full_like(canvas, mask_id), canvas)
    return noisy, full, t.to(canvas.device)


WEIGHTINGS: tuple[str, ...] = ("llada", "mean")


def diffusion_loss(model: DiffusionLM, canvas: Tensor, key_mask: Tensor, positions: Tensor, gen_start: int,
                   eps: float, gen: torch.Generator, stratified: bool = False, weighting: str = "llada") -> Tensor:
    """LLaDA SFT loss of one batch: sum over masked answer tokens of CE / t, over (rows * answer-region length).

    ``weighting="mean"`` instead averages the CE over the masked tokens (MaskGIT style, no 1/t): the same
    minimiser, far less gradient noise. On CPU budgets it is what makes tiny models learn: with 1/t a 2-layer
    model reached 7% fully-masked character accuracy on copy+sort in 600 steps, with the mean 28%.
    Dream predicts position i from output i-1, so its logits are read one position to the left.
    """
    assert model.special is not None
    noisy, masked, t = mask_answers(canvas, gen_start, model.special.mask, eps, gen, stratified)
    shift = 1 if model.logit_shift else 0
    index = slice(gen_start - shift, canvas.shape[1] - shift)
    logits = model(noisy, positions, key_mask, logits_index=index).float()  # [B, A, V]
    target = canvas[:, gen_start:]
    m = masked[:, gen_start:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none").view_as(target)
    if weighting == "mean":
        return (ce * m).sum() / m.sum()
    weighted = (ce * m) / t[:, None]
    return weighted.sum() / (canvas.shape[0] * (canvas.shape[1] - gen_start))


# --------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(model: DiffusionLM, examples: list[SyntheticExample], policy: str = "lowconf", batch_size: int = 64,
             **options: Any) -> dict[str, Any]:
    """Exact-match accuracy per family with the evaluation decoding (one token per step by default)."""
    from dllm.api import generate

    was_training = model.training
    model.eval()
    correct: dict[str, list[int]] = {}
    nfe: dict[str, list[int]] = {}
    fam_order = list(dict.fromkeys(ex.family for ex in examples))
    by_family = {f: [ex for ex in examples if ex.family == f] for f in fam_order}
    for fam, exs in by_family.items():  # one family per batch keeps padding (hence work) small
        for i in range(0, len(exs), batch_size):
            chunk = exs[i:i + batch_size]
            kwargs = dict(gen_length=ANSWER_LENGTH, block_length=ANSWER_LENGTH, steps=ANSWER_LENGTH)
            kwargs.update(options)
            out = generate(model, [ex.prompt for ex in chunk], policy=policy, **kwargs)
            assert out.texts is not None
            correct.setdefault(fam, []).extend(int(score(ex, text)) for ex, text in zip(chunk, out.texts))
            nfe.setdefault(fam, []).extend(out.seq_nfe)
    if was_training:
        model.train()
    per_family = {f: sum(v) / len(v) for f, v in correct.items()}
    all_scores = [s for v in correct.values() for s in v]
    return {
        "accuracy": sum(all_scores) / max(1, len(all_scores)),
        "per_family": per_family,
        "nfe": {f: sum(v) / len(v) for f, v in nfe.items()},
        "n": len(all_scores),
    }


# --------------------------------------------------------------------------------------------------------
# Training loop


def lr_at(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    """Linear warmup then cosine decay to ``min_lr_ratio * lr``.

    With a ``time_limit`` the decay follows whichever runs out first, steps or time, so a run cut by the
    clock still ends at a low learning rate (the best checkpoints come from there).
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    if cfg.time_limit:
        progress = max(progress, min(1.0, elapsed / cfg.time_limit))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _new_model(cfg: TrainConfig, tokenizer: Any) -> DiffusionLM:
    if cfg.init_from:
        model = load_model(cfg.init_from, device=cfg.device, dtype="float32")
        if model.kind != cfg.kind:
            raise DllmError(f"init_from {cfg.init_from!r} is a {model.kind} checkpoint, not {cfg.kind}")
        if cfg.grow_layers:
            from dllm.training.growth import grow_layers

            model = grow_layers(model, cfg.grow_layers, seed=cfg.seed + 1)
    else:
        model = build_model(model_config(cfg, len(tokenizer)), seed=cfg.seed).to(cfg.device)
    model.tokenizer = tokenizer
    model.special = special_tokens(model.config, tokenizer, "train")
    return model.train().requires_grad_(True)


def save_checkpoint(model: DiffusionLM, directory: Path, cfg: TrainConfig, info: dict[str, Any]) -> None:
    """``save_pretrained`` (weights in ``cfg.dtype``, char tokenizer) plus the run's config and metrics."""
    from dllm.models.loading import resolve_dtype

    dtype = resolve_dtype(cfg.dtype, torch.device("cpu"))
    if dtype != torch.float32:
        clone = clone_as(model, dtype)
        clone.save_pretrained(directory)
    else:
        model.save_pretrained(directory)
    write_generation_defaults(directory)
    (directory / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    (directory / "train_metrics.json").write_text(json.dumps(info, indent=2) + "\n")


def write_generation_defaults(directory: Path) -> None:
    """The model only knows a ``ANSWER_LENGTH``-token answer region and no chat format: record that in
    ``generation_config.json`` so ``dllm generate`` decodes it the way it was trained."""
    defaults = {"gen_length": ANSWER_LENGTH, "block_length": ANSWER_LENGTH, "steps": ANSWER_LENGTH, "chat": False}
    (Path(directory) / "generation_config.json").write_text(
        json.dumps({"_from_model_config": True, "dllm": defaults}, indent=2) + "\n")


def clone_as(model: DiffusionLM, dtype: torch.dtype) -> DiffusionLM:
    """A CPU copy of ``model`` in ``dtype`` (weights copied from any device), tokenizer and special ids kept."""
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    clone = clone.to(dtype)
    clone.tokenizer, clone.special = model.tokenizer, model.special
    return clone


def length_buckets(indices: list[int], lengths: list[int], buckets: int) -> list[list[int]]:
    """Split a batch into ``buckets`` groups of similar prompt length (sorted by length, then equal-size chunks)."""
    order = sorted(indices, key=lambda i: lengths[i])
    if buckets <= 1 or len(order) <= 1:
        return [order]
    groups: list[list[int]] = []
    per = math.ceil(len(order) / buckets)
    for i in range(0, len(order), per):
        groups.append(order[i:i + per])
    return groups


def train_tiny(config: TrainConfig) -> Path:
    """Train a tiny model with the masked-diffusion objective; keep the best held-out checkpoint.

    Returns the output directory, which holds the best checkpoint (``dllm.load_model`` loads it); the
    last weights go to ``out/last``.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cfg = config
    validate(cfg)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_fh = open(cfg.log_file, "a", encoding="utf-8") if cfg.log_file else None
    console = Console(file=log_fh, force_terminal=False, width=140) if log_fh else Console()

    def log(msg: str) -> None:
        console.print(f"[{time.strftime('%H:%M:%S')}] {msg}", highlight=False)
        if log_fh:
            log_fh.flush()

    tokenizer = build_char_tokenizer()
    model = _new_model(cfg, tokenizer)
    device = model.device
    assert model.special is not None
    eos = model.special.eos
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{cfg.kind} model: {n_params / 1e6:.2f}M parameters, {model.num_layers} layers"
        f"{f' ({cfg.grow_layers} new)' if cfg.grow_layers else ''}")

    # Data: pre-tokenised train pool per family; held-out eval slice of the test split.
    pools: dict[str, tuple[list[list[int]], list[list[int]]]] = {}
    for fam in cfg.families:
        exs = load_split("train", n_per_family=cfg.train_pool, families=[fam], seed=0)
        prompts = tokenizer([e.prompt for e in exs], add_special_tokens=False)["input_ids"]
        answers = [answer_ids(e.answer, tokenizer, eos) for e in exs]
        pools[fam] = (prompts, answers)
    held = [ex for fam in cfg.families
            for ex in load_split("test", n_per_family=cfg.eval_offset + cfg.eval_per_family, families=[fam])[cfg.eval_offset:]]
    weights = {f: 1.0 for f in cfg.families}
    if cfg.family_weights:
        weights.update(cfg.family_weights)
    base_weights = dict(weights)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n and "embed_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wte" not in n and "embed_tokens" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=cfg.betas)

    best = -1.0
    history: list[dict[str, Any]] = []
    t0 = time.time()
    running = None
    fams = list(cfg.families)

    def run_eval(step: int) -> None:
        nonlocal best, weights
        res = evaluate(model, held)
        res.update(step=step, elapsed=round(time.time() - t0, 1), loss=running)
        history.append(res)
        per = " ".join(f"{f}={a:.2f}" for f, a in res["per_family"].items())
        improved = res["accuracy"] > best
        if improved:
            best = res["accuracy"]
            save_checkpoint(model, out, cfg, {"best": res, "history": history, "parameters": n_params})
        log(f"eval step {step}: acc {res['accuracy']:.3f} ({per}){' *best, saved' if improved else ''}")
        if cfg.adaptive_mix:
            err = {f: (1 - res["per_family"].get(f, 0.0)) for f in fams}
            weights = {f: base_weights[f] * (cfg.mix_floor + err[f]) for f in fams}
            if not sum(weights.values()) > 0:  # floor 0 and every family solved: back to the base mix
                weights = dict(base_weights)
            log("mix " + " ".join(f"{f}={w / sum(weights.values()):.2f}" for f, w in weights.items()))

    progress = Progress(TextColumn("[bold]train-tiny"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("loss {task.fields[loss]}"), TextColumn("acc {task.fields[acc]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=log_fh is not None)
    stopped = cfg.steps
    with progress:
        task = progress.add_task("train", total=cfg.steps, loss="-", acc="-")
        model.train()
        for step in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg, time.time() - t0)
            w = [weights[f] for f in fams]
            picks = rng.choices(fams, weights=w, k=cfg.batch_size)
            rows = []
            for fam in picks:
                prompts, answers = pools[fam]
                j = rng.randrange(len(prompts))
                rows.append((prompts[j], answers[j]))
            lengths = [len(p) for p, _ in rows]
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for idx in length_buckets(list(range(len(rows))), lengths, cfg.buckets):
                canvas, key_mask, positions, gen_start = training_canvas(
                    model, [rows[i][0] for i in idx], [rows[i][1] for i in idx], device)
                loss = diffusion_loss(model, canvas, key_mask, positions, gen_start, cfg.eps, gen, cfg.stratified_t, cfg.weighting)
                (loss * len(idx) / len(rows)).backward()
                total += loss.item() * len(idx) / len(rows)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            running = total if running is None else 0.95 * running + 0.05 * total
            progress.update(task, advance=1, loss=f"{running:.3f}", acc=f"{best:.3f}" if best >= 0 else "-")
            if (step + 1) % cfg.log_every == 0:
                log(f"step {step + 1}/{cfg.steps} loss {running:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                    f"{(time.time() - t0) / (step + 1):.2f}s/step")
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                run_eval(step + 1)
            if cfg.time_limit is not None and time.time() - t0 > cfg.time_limit:
                log(f"time limit {cfg.time_limit:.0f}s reached at step {step + 1}")
                stopped = step + 1
                if (step + 1) % cfg.eval_every:
                    run_eval(step + 1)
                break
    save_checkpoint(model, out / "last", cfg, {"step": stopped, "history": history, "parameters": n_params})
    log(f"done in {time.time() - t0:.0f}s; best held-out accuracy {best:.3f}; checkpoint {out}")
    if log_fh:
        log_fh.close()
    return out


def untrained_model(kind: str = "llada", hidden: int = 128, layers: int = 4, heads: int = 4, seed: int = 0,
                    device: str | torch.device = "cpu") -> DiffusionLM:
    """A randomly initialised model in the shipped models' exact format (char tokenizer, special ids): what
    ``train_tiny`` starts from, and a stand-in for benchmarks where no trained checkpoint is present."""
    tok = build_char_tokenizer()
    cfg = model_config(TrainConfig(kind=kind, hidden=hidden, layers=layers, heads=heads), len(tok))
    model = build_model(cfg, seed=seed).to(device).eval().requires_grad_(False)
    model.tokenizer = tok
    model.special = special_tokens(model.config, tok, "untrained")
    return model
