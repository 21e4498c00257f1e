"""Learn2PD filter training: trace collection, labels, training and threshold selection.

The filter model, its file format and its features are the runtime half and live beside the policy in
``dllm.samplers.learned``; this module only produces filters.

Training data: the slow baseline (``policy="lowconf"``, one token per step) gives the final tokens. By default
(``trajectory="oracle"``, as the reference) the EGP oracle (``oracle_policy``: commit every position whose
prediction already equals its final token) is replayed towards that output, and each of its steps gives the
features of the row's block and, per undecided block position, the label "proposed token == final token of
the slow decode"; these are the states a fast policy visits. ``trajectory="baseline"`` takes the examples
along the slow decode's own trace instead (no second decode).

Accept threshold (``threshold_rule``): ``"reference"`` (default) stores the reference's fixed 0.96;
``"worst-group"`` the smallest grid value at which *every* group of prompts (e.g. every synthetic family)
reaches ``target_precision`` on validation; ``"pooled"`` the smallest with that precision pooled over all
validation positions (the rule before, which let easy positions - EOS padding, one-answer families - hide a
family at 48% precision).

**Quirks** (differences from the reference, docs/methods.md#learn2pd): decided positions are fed as 1.0
instead of the model's raw output there and are left out of the loss (their filter output is never used); the
oracle's stuck guard commits one position (``dllm.samplers.oracle``); train/validation are split by prompt,
not by row (the reference leaks prompts across splits); confidences are fp32 (the reference no-cache path uses
bf16 probabilities); early stopping on validation loss instead of a fixed 40,000 full-batch iterations.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from dllm.errors import DllmError, check_choice
from dllm.samplers.learned import DEFAULT_THRESHOLD, FilterMLP, block_features
from dllm.samplers.oracle import oracle_policy

THRESHOLD_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.96, 0.98, 0.99)


@dataclass
class FilterData:
    """Training examples: ``features`` / ``labels`` / ``valid`` [N, K] and the prompt each row came from."""

    features: Tensor
    labels: Tensor
    valid: Tensor
    prompt: Tensor
    block_length: int
    info: dict[str, Any] = field(default_factory=dict)
    #: group of each prompt (indexed by prompt number), e.g. its synthetic family; for ``threshold_rule="worst-group"``
    groups: list[str] | None = None

    def __len__(self) -> int:
        return self.features.shape[0]


def trace_examples(trace: Any, final: Tensor, block_length: int, prompt_offset: int = 0
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Turn one ``generate(..., trace=True)`` trace into filter examples (see the module docstring).

    ``final`` [B, gen_length] are the decoded tokens. Blocks longer than ``block_length`` are split into
    chunks; shorter ones are zero-padded (``valid`` False there)."""
    feats, labels, valid, prompts = [], [], [], []
    k = block_length
    for s in trace.steps:
        ws = s.window_start
        bs = s.block_start - ws
        be = s.block_end - ws
        f, cols, ok = block_features(s.confidence, s.candidates, bs, be)
        gen_cols = (cols + ws - trace.gen_start).clamp(0, final.shape[1] - 1)
        lab = s.proposed.gather(1, cols) == final.gather(1, gen_cols)
        ok = ok & s.active[:, None]
        length = f.shape[1]
        chunks = max(1, math.ceil(length / k))
        pad = chunks * k - length
        f = torch.nn.functional.pad(f, (0, pad)).view(-1, chunks, k)
        lab = torch.nn.functional.pad(lab, (0, pad)).view(-1, chunks, k)
        ok = torch.nn.functional.pad(ok, (0, pad)).view(-1, chunks, k)
        keep = ok.any(-1)  # [B, chunks]
        rows = torch.arange(f.shape[0])[:, None].expand_as(keep)
        feats.append(f[keep])
        labels.append(lab[keep])
        valid.append(ok[keep])
        prompts.append(rows[keep] + prompt_offset)
    if not feats:
        z = torch.zeros((0, k))
        return z, z.bool(), z.bool(), torch.zeros(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels), torch.cat(valid), torch.cat(prompts)


TRAJECTORIES = ("oracle", "baseline")
THRESHOLD_RULES = ("reference", "worst-group", "pooled")


def collect_filter_data(model: Any, prompts: Sequence[Any], gen_length: int, block_length: int,
                        batch_size: int = 32, stop_at_eos: bool = True, trajectory: str = "oracle",
                        progress: Callable[[int, int], None] | None = None,
                        groups: Sequence[str] | None = None) -> FilterData:
    """Run the one-token-per-step baseline (``lowconf``, ``steps = gen_length``) on ``prompts`` (token-id
    lists or text) and label every traced block position against its final tokens.

    ``trajectory="oracle"`` (default, as the reference) replays the EGP oracle (``oracle_policy``) towards the
    baseline's output and takes the features along that trajectory (the states a fast policy sees; a few
    extra forwards per prompt). ``"baseline"`` takes them along the baseline's own trace. ``groups`` (one name
    per prompt, e.g. its task family) are kept for the worst-group threshold rule."""
    from dllm.api import generate

    check_choice("trajectory", trajectory, TRAJECTORIES)
    if not prompts:
        raise DllmError("no prompts to collect filter data from")
    if groups is not None and len(groups) != len(prompts):
        raise DllmError(f"got {len(groups)} groups for {len(prompts)} prompts")
    if gen_length % block_length:
        raise DllmError(f"gen_length {gen_length} is not a multiple of block_length {block_length}")
    feats, labels, valid, owner = [], [], [], []
    nfe = 0
    done = 0
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i:i + batch_size])
        kw = dict(gen_length=gen_length, block_length=block_length, steps=gen_length, stop_at_eos=stop_at_eos)
        out = generate(model, chunk, policy="lowconf", trace=trajectory == "baseline", **kw)
        final = out.tokens
        if trajectory == "oracle":
            nfe += sum(out.seq_nfe)
            out = generate(model, chunk, policy=oracle_policy(final), trace=True, **kw)
        f, lab, ok, who = trace_examples(out.trace, final, block_length, prompt_offset=i)
        feats.append(f), labels.append(lab), valid.append(ok), owner.append(who)
        nfe += sum(out.seq_nfe)
        done += len(chunk)
        if progress is not None:
            progress(done, len(prompts))
    data = FilterData(torch.cat(feats), torch.cat(labels), torch.cat(valid), torch.cat(owner), block_length,
                      info={"prompts": len(prompts), "gen_length": gen_length, "trajectory": trajectory, "nfe": nfe},
                      groups=None if groups is None else [str(g) for g in groups])
    data.info["rows"] = len(data)
    data.info["positions"] = int(data.valid.sum())
    data.info["positive_rate"] = float(data.labels[data.valid].float().mean()) if data.info["positions"] else 0.0
    return data


# --------------------------------------------------------------------------------------------------------
# Training


def _masked_bce(logits: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def threshold_table(probs: Tensor, labels: Tensor, valid: Tensor, grid: Sequence[float] = THRESHOLD_GRID
                    ) -> list[dict[str, float]]:
    """Precision / recall / accept rate of ``probs > tau`` on the valid positions, for each tau."""
    p, y = probs[valid], labels[valid].bool()
    rows = []
    for tau in grid:
        acc = p > tau
        tp = int((acc & y).sum())
        n_acc = int(acc.sum())
        rows.append({"threshold": float(tau), "precision": tp / n_acc if n_acc else 1.0,
                     "recall": tp / max(1, int(y.sum())), "accept_rate": n_acc / max(1, p.numel())})
    return rows


def group_tables(probs: Tensor, data: FilterData, mask: Tensor, grid: Sequence[float] = THRESHOLD_GRID
                 ) -> dict[str, list[dict[str, float]]]:
    """``threshold_table`` per group of prompts (``data.groups``) over the positions of ``mask`` [N, K]."""
    if data.groups is None:
        return {}
    names = sorted(set(data.groups))
    of_row = [data.groups[int(p)] for p in data.prompt.tolist()]
    out = {}
    for name in names:
        rows = torch.tensor([g == name for g in of_row], dtype=torch.bool)
        m = mask & rows[:, None]
        if bool(m.any()):
            out[name] = threshold_table(probs, data.labels, m, grid)
    return out


def pick_threshold(rule: str, table: list[dict[str, float]], groups: dict[str, list[dict[str, float]]],
                   target_precision: float) -> float:
    """The accept threshold ``rule`` picks from the validation tables (grid order), else the reference's 0.96.

    ``reference``: 0.96. ``pooled``: the smallest grid value whose pooled precision reaches ``target_precision``
    (with at least one accept). ``worst-group``: the smallest whose precision reaches it in every group (a group
    with no accept there counts as precise), with at least one accept overall."""
    check_choice("threshold rule", rule, THRESHOLD_RULES)
    if rule == "reference":
        return DEFAULT_THRESHOLD
    if rule == "worst-group" and not groups:
        raise DllmError("threshold rule 'worst-group' needs the prompts' groups (collect_filter_data(groups=...))")
    for i, row in enumerate(table):
        if row["accept_rate"] <= 0:
            continue
        precision = row["precision"] if rule == "pooled" else min(t[i]["precision"] for t in groups.values())
        if precision >= target_precision:
            return row["threshold"]
    return DEFAULT_THRESHOLD


def train_filter(data: FilterData, hidden: int = 32, layers: int = 2, iterations: int = 3000, lr: float = 3e-3,
                 weight_decay: float = 0.01, val_fraction: float = 0.1, patience: int = 300, seed: int = 0,
                 target_precision: float = 0.99, threshold_rule: str = "reference", device: str | torch.device = "cpu",
                 progress: Callable[[int, int, float, float], None] | None = None) -> tuple[FilterMLP, dict[str, Any]]:
    """Full-batch AdamW on masked BCE (as the reference notebook), validation split by prompt, early stop on
    validation loss (best weights kept). The suggested threshold follows ``threshold_rule`` (``pick_threshold``):
    the reference's 0.96 by default, or the smallest grid value whose validation precision reaches
    ``target_precision`` in every group (``"worst-group"``) or pooled (``"pooled"``). The stats hold the
    validation tables, pooled and per group, whichever rule picked."""
    check_choice("threshold rule", threshold_rule, THRESHOLD_RULES)
    if len(data) == 0 or int(data.valid.sum()) == 0:
        raise DllmError("no training examples (every trace was empty); use more prompts")
    if threshold_rule == "worst-group" and data.groups is None:
        raise DllmError("threshold rule 'worst-group' needs the prompts' groups (collect_filter_data(groups=...))")
    if not 0 <= val_fraction < 1:
        raise DllmError(f"val_fraction {val_fraction!r} must be in [0, 1)")
    if iterations <= 0:
        raise DllmError(f"iterations {iterations!r} must be positive")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    prompts = torch.unique(data.prompt)
    perm = prompts[torch.randperm(prompts.numel(), generator=g)]
    n_val = int(round(val_fraction * prompts.numel())) if prompts.numel() > 1 else 0
    val_prompts = perm[:n_val]
    is_val = torch.isin(data.prompt, val_prompts)
    dev = torch.device(device)
    x, y, m = data.features.float().to(dev), data.labels.float().to(dev), data.valid.float().to(dev)
    tr, va = ~is_val.to(dev), is_val.to(dev)
    if not bool(va.any()):
        va = tr  # too few prompts for a split: validate on the training data (reported as such)
    module = FilterMLP(data.block_length, hidden, layers).to(dev)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    best = (float("inf"), None, 0)
    t0 = time.perf_counter()
    it = 0
    for it in range(1, iterations + 1):
        module.train()
        opt.zero_grad(set_to_none=True)
        loss = _masked_bce(module(x[tr]), y[tr], m[tr])
        loss.backward()
        opt.step()
        with torch.no_grad():
            module.eval()
            vloss = float(_masked_bce(module(x[va]), y[va], m[va]))
        if vloss < best[0] - 1e-6:
            best = (vloss, {k: v.detach().clone() for k, v in module.state_dict().items()}, it)
        if progress is not None:
            progress(it, iterations, float(loss.detach()), vloss)
        if it - best[2] >= patience:
            break
    if best[1] is not None:
        module.load_state_dict(best[1])
    module = module.cpu().eval().requires_grad_(False)
    with torch.no_grad():
        probs = torch.sigmoid(module(data.features.float()))
    vmask = data.valid & is_val[:, None] if bool(is_val.any()) else data.valid
    table = threshold_table(probs, data.labels, vmask)
    by_group = group_tables(probs, data, vmask)
    threshold = pick_threshold(threshold_rule, table, by_group, target_precision)
    tmask = data.valid & ~is_val[:, None]
    stats = {
        "iterations": it, "best_iteration": best[2], "val_loss": best[0],
        "train_loss": float(_masked_bce(torch.logit(probs.clamp(1e-6, 1 - 1e-6)), data.labels.float(), tmask.float())),
        "train_prompts": int(prompts.numel() - n_val), "val_prompts": int(n_val),
        "threshold": threshold, "threshold_rule": threshold_rule, "target_precision": target_precision,
        "val_thresholds": table, "val_thresholds_by_group": by_group,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return module, stats


# --------------------------------------------------------------------------------------------------------
