"""The denoising loop: canvas, blocks, steps, NFE counting, EOS stop, batching, traces.

It knows no policy and no cache detail. Every row of a batch has its own block, step counter and random
generator, so a row decodes exactly as it would alone (ragged prompts are left-padded and masked out of
attention, and RoPE positions skip the padding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from dllm.errors import DllmError
from dllm.models.base import DiffusionLM
from dllm.samplers.base import Policy, StepContext
from dllm.samplers.schedules import BlockSchedule


@dataclass
class TraceStep:
    """One denoising step. Tensors are [B, W] over canvas positions ``window_start ..`` (CPU copies)."""

    step: int
    window_start: int
    active: Tensor  #: [B] bool
    block_start: Tensor  #: [B]
    block_end: Tensor  #: [B]
    candidates: Tensor  #: [B, W] bool: positions the policy could commit
    proposed: Tensor  #: [B, W] long: the policy's token for each position
    confidence: Tensor  #: [B, W] float32 (-inf off candidates)
    committed: Tensor  #: [B, W] bool


@dataclass
class Trace:
    gen_start: int
    gen_length: int
    steps: list[TraceStep] = field(default_factory=list)

    def to_generation_coords(self, values: Tensor, window_start: int, fill: float | int) -> Tensor:
        """Place a [B, W] window tensor into [B, gen_length] coordinates."""
        b, w = values.shape
        out = torch.full((b, self.gen_length), fill, dtype=values.dtype)
        lo = window_start - self.gen_start
        src_lo, dst_lo = max(0, -lo), max(0, lo)
        n = min(w - src_lo, self.gen_length - dst_lo)
        out[:, dst_lo:dst_lo + n] = values[:, src_lo:src_lo + n]
        return out

    def commit_step(self) -> Tensor:
        """[B, gen_length]: the step index at which each position was committed (-1 if never)."""
        b = self.steps[0].committed.shape[0] if self.steps else 0
        out = torch.full((b, self.gen_length), -1, dtype=torch.long)
        for s in self.steps:
            c = self.to_generation_coords(s.committed, s.window_start, False)
            out[c & (out < 0)] = s.step
        return out


@dataclass
class GenerationOutput:
    tokens: Tensor  #: [B, gen_length] generated ids (EOS-filled after an early stop)
    nfe: int  #: batched model forward calls (the cost of this call)
    seq_nfe: list[int]  #: forwards each row took part in (equals the NFE of running that row alone)
    steps: int  #: denoising iterations of the loop
    elapsed: float  #: seconds (CUDA synchronised), tokenisation excluded
    prompt_lengths: list[int]
    end_ids: tuple[int, ...]
    trace: Trace | None = None
    texts: list[str] | None = None
    #: the cache manager's counters (``CacheManager.stats``): ``calls``, per-row ``nfe``; KV caches add per-row
    #: ``refreshes`` (full forwards) and ``forwarded`` (positions run through the model)
    cache_stats: dict[str, Any] = field(default_factory=dict)

    def generated_counts(self) -> list[int]:
        """Per row: tokens before the first end token (EOS/EOT), the 'generated tokens' of our metrics."""
        counts = []
        for row in self.tokens.tolist():
            n = len(row)
            for i, t in enumerate(row):
                if t in self.end_ids:
                    n = i
                    break
            counts.append(n)
        return counts

    @property
    def tokens_per_forward(self) -> float:
        """Generated tokens per forward per sequence (TPF)."""
        total_nfe = sum(self.seq_nfe)
        return sum(self.generated_counts()) / total_nfe if total_nfe else 0.0


def as_prompt_list(model: DiffusionLM, input_ids: Any, attention_mask: Tensor | None,
                   encode: Callable[[str], list[int]]) -> list[list[int]]:
    """Prompts as lists of token ids from a [B, L] tensor (+ attention mask), id lists, or text (one string or a
    list), which ``encode`` turns into ids."""
    if isinstance(input_ids, str) or (isinstance(input_ids, (list, tuple)) and input_ids and isinstance(input_ids[0], str)):
        texts = [input_ids] if isinstance(input_ids, str) else list(input_ids)
        return [encode(t) for t in texts]
    if isinstance(input_ids, Tensor):
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dim() != 2:
            raise DllmError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        rows = input_ids.tolist()
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise DllmError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
            rows = [[t for t, m in zip(r, mr) if m] for r, mr in zip(rows, attention_mask.tolist())]
        return rows
    if isinstance(input_ids, (list, tuple)):
        if input_ids and isinstance(input_ids[0], int):
            return [list(input_ids)]
        return [list(map(int, r)) for r in input_ids]
    raise DllmError(f"input_ids must be a tensor, a list of ids, a list of id lists or text, got {type(input_ids).__name__}")


def build_canvas(model: DiffusionLM, prompts: list[list[int]], gen_length: int, device: torch.device
                 ) -> tuple[Tensor, Tensor, Tensor, int]:
    """Left-pad the prompts and append ``gen_length`` masks. Returns canvas, key mask, positions, gen_start."""
    special = model.special
    assert special is not None
    if not prompts:
        raise DllmError("no prompt given")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise DllmError("empty prompt: every prompt needs at least one token")
    for p in prompts:
        if special.mask in p:
            raise DllmError(f"prompt contains the mask token id {special.mask}; prompts must be fully known text")
    lp = max(lengths)
    if lp + gen_length > model.max_length:
        raise DllmError(
            f"prompt length {lp} + gen_length {gen_length} = {lp + gen_length} exceeds the model's maximum length {model.max_length}"
        )
    vocab = model.vocab_size
    bad = [t for p in prompts for t in p if not 0 <= t < vocab]
    if bad:
        raise DllmError(f"token id {bad[0]} is outside the model's vocabulary [0, {vocab})")
    b = len(prompts)
    canvas = torch.full((b, lp + gen_length), special.mask, dtype=torch.long)
    key_mask = torch.ones((b, lp + gen_length), dtype=torch.bool)
    for i, p in enumerate(prompts):
        pad = lp - len(p)
        canvas[i, :pad] = special.pad
        canvas[i, pad:lp] = torch.tensor(p, dtype=torch.long)
        key_mask[i, :pad] = False
    positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)
    return canvas.to(device), key_mask.to(device), positions.to(device), lp


def _generators(seed: int | Sequence[int] | None, batch: int, device: torch.device) -> list[torch.Generator]:
    if seed is None:
        seed = 0
    seeds = [int(seed)] * batch if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != batch:
        raise DllmError(f"got {len(seeds)} seeds for a batch of {batch}")
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(s)
        gens.append(g)
    return gens


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def denoise(
    model: DiffusionLM,
    prompts: list[list[int]],
    policy: Policy,
    schedule: BlockSchedule,
    cache_factory: Any,
    gen_length: int,
    temperature: float = 0.0,
    seed: int | Sequence[int] | None = 0,
    stop_at_eos: bool = True,
    trace: bool = False,
    max_iterations: int | None = None,
) -> GenerationOutput:
    """Run the denoising loop. ``cache_factory(key_mask, positions, gen_start, gen_end)`` builds the manager."""
    special = model.special
    assert special is not None
    device = model.device
    canvas, key_mask, positions, gen_start = build_canvas(model, prompts, gen_length, device)
    b = canvas.shape[0]
    gen_end = gen_start + gen_length
    cache = cache_factory(key_mask, positions, gen_start, gen_end)
    state = policy.init_state(b, device)
    gens = _generators(seed, b, device)
    end_ids = torch.tensor(special.end_ids, device=device)

    undecided = torch.zeros_like(canvas, dtype=torch.bool)
    undecided[:, gen_start:] = True
    block_start = torch.full((b,), gen_start, dtype=torch.long, device=device)
    block_end = block_start.clone()  # empty block: opens on the first step
    opening = torch.ones(b, dtype=torch.bool, device=device)
    step = torch.zeros(b, dtype=torch.long, device=device)
    block_steps = torch.ones(b, dtype=torch.long, device=device)
    block_mask_count = torch.zeros(b, dtype=torch.long, device=device)
    active = torch.ones(b, dtype=torch.bool, device=device)
    record = Trace(gen_start, gen_length) if trace else None
    cols = torch.arange(canvas.shape[1], device=device)

    def in_blocks() -> Tensor:
        """[B, L] positions inside each row's current block."""
        return (cols >= block_start[:, None]) & (cols < block_end[:, None])

    iterations = 0
    # A guard against policies that never commit; every shipped policy finishes well inside it.
    max_iterations = max_iterations or 4 * gen_length + 64

    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        while bool(active.any()):
            iterations += 1
            if iterations > max_iterations:
                raise RuntimeError(f"policy {policy.name!r} made no progress for {max_iterations} steps")
            reach = torch.where(opening, schedule.lookahead(block_start, gen_end), block_end)
            ws = int(block_start[active].min())
            we = gen_end if policy.window == "answer" else int(reach[active].max())
            logits = cache.logits(canvas, active, block_start, reach, (ws, we))
            win = slice(ws, we)

            open_now = opening & active
            if bool(open_now.any()):
                new_end = schedule.open_block(block_start, open_now, logits, ws, canvas[:, win], gen_end)
                block_end = torch.where(open_now, new_end, block_end)
                block_mask_count = torch.where(open_now, (undecided & in_blocks()).sum(-1), block_mask_count)
                block_steps = torch.where(open_now, schedule.steps_for(block_end - block_start), block_steps)
                step = torch.where(open_now, torch.zeros_like(step), step)
                policy.on_block_start(state, open_now)
                opening = opening & ~open_now

            wcols = cols[win]
            und_w = undecided[:, win] & active[:, None]
            cand = und_w & (wcols >= block_start[:, None]) & (wcols < block_end[:, None])
            decoded = gen_length - undecided[:, gen_start:].sum(-1)
            ctx = StepContext(
                logits=logits, tokens=canvas[:, win], candidates=cand, undecided=und_w, window_start=ws,
                gen_start=gen_start, gen_length=gen_length, block_start=block_start, block_end=block_end, step=step,
                block_steps=block_steps, block_mask_count=block_mask_count, decoded=decoded, active=active,
                generators=gens, special=special, temperature=temperature,
            )
            decision = policy.decide(ctx, state)
            commit = decision.commit
            window = canvas[:, win]  # a view: writing it writes the canvas
            window[commit] = decision.tokens[commit]
            undecided[:, win] &= ~commit

            if record is not None:
                record.steps.append(TraceStep(
                    step=iterations - 1, window_start=ws, active=active.cpu().clone(), block_start=block_start.cpu().clone(),
                    block_end=block_end.cpu().clone(), candidates=cand.cpu(), proposed=decision.tokens.cpu(),
                    confidence=(decision.confidence if decision.confidence is not None
                                else torch.full(cand.shape, float("nan"))).float().cpu(), committed=commit.cpu(),
                ))

            finished = ~undecided[:, gen_start:].any(-1)
            if decision.finish is not None:
                finished |= decision.finish & active
            stopped = torch.zeros_like(finished)
            if stop_at_eos:
                gen = canvas[:, gen_start:]
                decided = ~undecided[:, gen_start:]
                final_end = torch.isin(gen, end_ids) & torch.cumprod(decided.long(), dim=-1).bool()
                stopped = final_end.any(-1) & active
                # positions after the first final end token: their text is cut anyway, make them EOS
                after_end = (torch.cumsum(final_end.long(), dim=-1) - final_end.long()) > 0
                finished |= stopped
            done_now = finished & active
            if bool(done_now.any()):
                fill = undecided & done_now[:, None]
                if bool(stopped.any()):  # only with stop_at_eos, which defined after_end
                    fill[:, gen_start:] |= after_end & stopped[:, None]
                canvas[fill] = special.eos
                undecided &= ~fill
                active = active & ~done_now

            step = step + active.long()
            block_done = active & ~(undecided & in_blocks()).any(-1)
            block_start = torch.where(block_done, block_end, block_start)
            opening = opening | block_done
    _sync(device)
    elapsed = time.perf_counter() - t0

    tokens = canvas[:, gen_start:].cpu()
    texts = None
    if model.tokenizer is not None:
        texts = [decode_answer(model, row) for row in tokens.tolist()]
    return GenerationOutput(
        tokens=tokens, nfe=cache.calls, seq_nfe=cache.nfe.tolist(), steps=iterations, elapsed=elapsed,
        prompt_lengths=[len(p) for p in prompts], end_ids=special.end_ids, trace=record, texts=texts,
        cache_stats=cache.stats(),
    )


def decode_answer(model: DiffusionLM, ids: list[int]) -> str:
    """Text of one generated row: cut at the first end token, special tokens skipped."""
    assert model.special is not None and model.tokenizer is not None
    ends = set(model.special.end_ids)
    cut = next((i for i, t in enumerate(ids) if t in ends), len(ids))
    return model.tokenizer.decode(ids[:cut], skip_special_tokens=True)
