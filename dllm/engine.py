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

from dllm.batching import generator, per_row_stats, refills_rows, reset_cache_rows, reset_policy_rows, seed_list
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
    remasked: Tensor | None = None  #: [B, W] bool: decided positions set back to the mask (revocable policies)


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
        """[B, gen_length]: the step index at which each position was committed (-1 if never); a position a
        revocable policy remasked counts from its last commit."""
        b = self.steps[0].committed.shape[0] if self.steps else 0
        out = torch.full((b, self.gen_length), -1, dtype=torch.long)
        for s in self.steps:
            c = self.to_generation_coords(s.committed, s.window_start, False)
            out[c & (out < 0)] = s.step
            if s.remasked is not None:
                out[self.to_generation_coords(s.remasked, s.window_start, False)] = -1
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
    slots: int | None = None,
    continuous: bool = True,
) -> GenerationOutput:
    """Run the denoising loop. ``cache_factory(key_mask, positions, gen_start, gen_end)`` builds the manager.

    ``slots``: decode at most this many prompts at once (None: all of them in one batch). With ``continuous``
    a finished row's slot takes the next waiting prompt at the end of the step that finished it (continuous
    batching, ``dllm/batching.py``); without, the prompts run as consecutive static batches. Either way every
    prompt decodes as it would alone and the output is in prompt order. ``max_iterations`` bounds each row's
    steps.
    """
    special = model.special
    assert special is not None
    device = model.device
    n = len(prompts)
    if slots is not None and slots < n and trace:
        raise DllmError(f"trace=True records one batch; {n} prompts do not fit in a batch of {slots} "
                        "(give batch_size >= the number of prompts)")
    kwargs = dict(temperature=temperature, stop_at_eos=stop_at_eos, max_iterations=max_iterations)
    if slots is not None and slots < n and not continuous:
        return _static_batches(model, prompts, policy, schedule, cache_factory, gen_length, seed, slots, **kwargs)
    canvas, key_mask, positions, gen_start = build_canvas(model, prompts, gen_length, device)
    b = n if slots is None else min(slots, n)
    pool = (canvas, key_mask, positions)  # every prompt's row, padded to the longest prompt of the call
    if b < n:
        canvas, key_mask, positions = canvas[:b].clone(), key_mask[:b].clone(), positions[:b].clone()
    gen_end = gen_start + gen_length
    cache = cache_factory(key_mask, positions, gen_start, gen_end)
    state = policy.init_state(b, device)
    for piece in policy.pieces():  # a piece that forwards states of its own (FreeDave's drafts) wraps the manager
        if hasattr(piece, "wrap_cache"):
            cache = piece.wrap_cache(cache, cache_factory, state, policy)
    if b < n and not refills_rows(cache):  # Quirk (dllm/batching.py): unknown per-row cache state
        return _static_batches(model, prompts, policy, schedule, cache_factory, gen_length, seed, slots, **kwargs)
    seeds = seed_list(seed, n)
    gens = [generator(s, device) for s in seeds[:b]]
    end_ids = torch.tensor(special.end_ids, device=device)
    occupant = list(range(b))  #: prompt held by each slot
    admitted = [0] * b  #: iteration at which each slot's prompt joined
    oldest = 0  #: earliest admission among the active rows (the no-progress guard counts from it)
    waiting = b  #: next prompt to admit
    out_tokens = torch.empty((n, gen_length), dtype=torch.long)
    out_stats: dict[str, list] = {}

    def harvest(idx: list[int]) -> None:
        """Keep the tokens and per-row cache counters of the prompts in slots ``idx``."""
        rows = canvas[idx, gen_start:].cpu()
        stats = cache.stats()
        for key in per_row_stats(stats, b):
            out_stats.setdefault(key, [0] * n)
        for k, i in enumerate(idx):
            out_tokens[occupant[i]] = rows[k]
            for key in per_row_stats(stats, b):
                out_stats[key][occupant[i]] = stats[key][i]

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
            if iterations - oldest > max_iterations:
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
            remask = decision.remask
            if remask is not None:  # a revocable policy (docs/design.md#remasking); None for every other policy
                in_block_w = (wcols >= block_start[:, None]) & (wcols < block_end[:, None])
                keep = active if decision.finish is None else active & ~decision.finish
                remask = remask & in_block_w & ~und_w & keep[:, None]  # decided before this step, in the block
                # loop guard (net progress): after its k-th step in a block a row keeps >= k of its positions decided
                left = (in_block_w & ~undecided[:, win] & ~remask).sum(-1)
                remask &= (left > step)[:, None]
                window[remask] = special.mask
                undecided[:, win] |= remask
                policy.on_remask(state, remask)  # what was applied (WINO counts it)

            if record is not None:
                record.steps.append(TraceStep(
                    step=iterations - 1, window_start=ws, active=active.cpu().clone(), block_start=block_start.cpu().clone(),
                    block_end=block_end.cpu().clone(), candidates=cand.cpu(), proposed=decision.tokens.cpu(),
                    confidence=(decision.confidence if decision.confidence is not None
                                else torch.full(cand.shape, float("nan"))).float().cpu(), committed=commit.cpu(),
                    remasked=None if remask is None else remask.cpu(),
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

            if waiting < n and bool(done_now.any()):  # continuous batching: refill the freed slots in order
                free = done_now.nonzero().squeeze(1).tolist()[:n - waiting]
                harvest(free)
                for i in free:
                    occupant[i], admitted[i], gens[i] = waiting, iterations, generator(seeds[waiting], device)
                    waiting += 1
                src = torch.tensor([occupant[i] for i in free], device=device)
                for slot_tensor, all_rows in zip((canvas, key_mask, positions), pool):
                    slot_tensor[free] = all_rows[src]
                rows = torch.zeros(b, dtype=torch.bool, device=device)
                rows[free] = True
                undecided[rows] = cols >= gen_start
                block_start[rows] = gen_start
                block_end[rows] = gen_start
                opening[rows] = True
                step[rows] = 0
                block_steps[rows] = 1
                block_mask_count[rows] = 0
                active[rows] = True
                reset_policy_rows(policy, state, rows)
                reset_cache_rows(cache, cache_factory(key_mask, positions, gen_start, gen_end), rows)
            if b < n and bool(done_now.any()):
                live = active.tolist()
                oldest = min((admitted[i] for i in range(b) if live[i]), default=iterations)
    _sync(device)
    elapsed = time.perf_counter() - t0

    harvest(list(range(b)))
    texts = None
    if model.tokenizer is not None:
        texts = [decode_answer(model, row) for row in out_tokens.tolist()]
    stats = cache.stats()
    stats.update(out_stats)
    return GenerationOutput(
        tokens=out_tokens, nfe=cache.calls, seq_nfe=list(stats["nfe"]), steps=iterations, elapsed=elapsed,
        prompt_lengths=[len(p) for p in prompts], end_ids=special.end_ids, trace=record, texts=texts,
        cache_stats=stats,
    )


def _static_batches(model: DiffusionLM, prompts: list[list[int]], policy: Policy, schedule: BlockSchedule,
                    cache_factory: Any, gen_length: int, seed: int | Sequence[int] | None, size: int,
                    **kwargs: Any) -> GenerationOutput:
    """``prompts`` decoded as consecutive batches of ``size``, one ``denoise`` call each, joined in order."""
    seeds = seed_list(seed, len(prompts))
    return concat_outputs([
        denoise(model, prompts[i:i + size], policy, schedule, cache_factory, gen_length, seed=seeds[i:i + size],
                **kwargs)
        for i in range(0, len(prompts), size)
    ])


def concat_outputs(outs: Sequence[GenerationOutput]) -> GenerationOutput:
    """One output for consecutive calls: rows and per-row lists joined, counts and times summed (no trace)."""
    first = outs[0]
    stats: dict[str, Any] = {}
    for key, value in first.cache_stats.items():
        parts = [o.cache_stats[key] for o in outs]
        stats[key] = [x for p in parts for x in p] if isinstance(value, list) else sum(parts)
    texts = None if any(o.texts is None for o in outs) else [t for o in outs for t in o.texts]
    return GenerationOutput(
        tokens=torch.cat([o.tokens for o in outs]), nfe=sum(o.nfe for o in outs),
        seq_nfe=[x for o in outs for x in o.seq_nfe], steps=sum(o.steps for o in outs),
        elapsed=sum(o.elapsed for o in outs), prompt_lengths=[x for o in outs for x in o.prompt_lengths],
        end_ids=first.end_ids, trace=None, texts=texts, cache_stats=stats,
    )


def decode_answer(model: DiffusionLM, ids: list[int]) -> str:
    """Text of one generated row: cut at the first end token, special tokens skipped."""
    assert model.special is not None and model.tokenizer is not None
    ends = set(model.special.end_ids)
    cut = next((i for i, t in enumerate(ids) if t in ends), len(ids))
    return model.tokenizer.decode(ids[:cut], skip_special_tokens=True)
