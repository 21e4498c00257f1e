"""Learn2PD filter: model, trace collection, training, save/load, and the oracle NFE bound.

The filter (spec ``learn2pd-and-beyond.md`` §1.3) is a tiny MLP over the current block's per-position
top-1 probabilities, ``Linear(K, H) -> ReLU -> Linear(H, K)`` (K = block length = 32 and H = 32 in the
reference; 2,112 parameters), predicting per position "the current prediction already equals the final
token". Its parameter names are the reference's (``linear1.weight`` ...), so the released state dict maps
onto it unchanged. It is saved as ``filter.safetensors`` plus ``filter_config.json`` holding the block length
(a filter only fits the block size it was trained for), the hidden size, the suggested accept threshold and
the training statistics.

Features (shared by training and the ``learnedfilter`` policy, so they cannot drift apart): for each
position of the row's current block, the top-1 probability if it is undecided, **1.0 if it is already
decided**, and 0.0 as right padding when the block is shorter than K. Blocks longer than K (adaptive
blocks) are cut into consecutive K-chunks.

Training data: the slow baseline (``policy="lowconf"``, one token per step) gives the final tokens. By default
(``trajectory="baseline"``, as the project brief asks) the examples come from the baseline's own trace
(``trace=True``): each step of a row gives the features of its block and, per undecided block position, the
label "proposed token == final token of the slow decode". ``trajectory="oracle"`` instead replays the EGP
oracle (``oracle_policy``: commit every position whose prediction already equals its final token) and
takes the examples along that trajectory, as the reference does; its states are closer to what a fast
policy visits. Further differences from the reference: decided positions are fed as 1.0 instead of the
model's raw output there and are left out of the loss (their filter output is never used); train/validation
are split by prompt, not by row (the reference leaks prompts across splits); confidences are fp32 (the
reference no-cache path uses bf16 probabilities); early stopping on validation loss instead of a fixed
40,000 full-batch iterations.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from dllm.errors import DllmError

WEIGHTS_FILE = "filter.safetensors"
CONFIG_FILE = "filter_config.json"
FEATURE = "top1_prob"
LAYER_CHOICES = (1, 2, 4)
THRESHOLD_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.96, 0.98, 0.99)
DEFAULT_THRESHOLD = 0.96  #: the reference's ``accept_thres``


class FilterMLP(nn.Module):
    """The reference's ``LogisticRegression(input_dim)`` (a misnomer): 1, 2 (default) or 4 linear layers
    with ReLU between, input and output size ``block_length``."""

    def __init__(self, block_length: int = 32, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        if layers not in LAYER_CHOICES:
            raise DllmError(f"filter layers {layers!r} not supported; choose one of: {', '.join(map(str, LAYER_CHOICES))}")
        if block_length <= 0 or hidden <= 0:
            raise DllmError(f"filter block_length {block_length} and hidden {hidden} must be positive")
        self.block_length = int(block_length)
        self.hidden = int(hidden)
        self.layers = int(layers)
        dims = [block_length] + [hidden] * (layers - 1) + [block_length]
        for i in range(layers):
            setattr(self, f"linear{i + 1}", nn.Linear(dims[i], dims[i + 1]))

    def forward(self, x: Tensor) -> Tensor:
        """Logits [N, n] for features [N, n]; n < block_length is zero-padded on the right (reference trick)."""
        n = x.shape[-1]
        if n > self.block_length:
            raise DllmError(f"filter input has {n} positions but the filter was trained for block_length {self.block_length}")
        if n < self.block_length:
            x = torch.nn.functional.pad(x, (0, self.block_length - n))
        h = x.float()
        for i in range(self.layers):
            h = getattr(self, f"linear{i + 1}")(h)
            if i < self.layers - 1:
                h = torch.relu(h)
        return h[..., :n]

    def predict(self, features: Tensor) -> Tensor:
        """Accept probabilities [B, L] for block features [B, L] of any length (K-chunks, last one padded)."""
        b, length = features.shape
        k = self.block_length
        chunks = max(1, math.ceil(length / k))
        padded = torch.nn.functional.pad(features.float(), (0, chunks * k - length))
        probs = torch.sigmoid(self(padded.view(b * chunks, k))).view(b, chunks * k)
        return probs[:, :length]


@dataclass
class LearnedFilter:
    """A loaded filter: the module and its metadata (``threshold`` is the suggested accept threshold)."""

    module: FilterMLP
    config: dict[str, Any]
    path: str = ""

    @property
    def block_length(self) -> int:
        return self.module.block_length

    @property
    def threshold(self) -> float:
        return float(self.config.get("threshold", DEFAULT_THRESHOLD))


def save_filter(module: FilterMLP, directory: str | os.PathLike, **metadata: Any) -> Path:
    """Write ``filter.safetensors`` + ``filter_config.json`` (block length, sizes, metadata) into ``directory``."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {"block_length": module.block_length, "hidden": module.hidden, "layers": module.layers,
              "feature": FEATURE, "prob_dtype": "float32", "threshold": DEFAULT_THRESHOLD}
    config.update(metadata)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def load_filter(path: str | os.PathLike) -> LearnedFilter:
    """Load a filter directory written by ``save_filter`` (one-line ``DllmError`` when it is not one)."""
    from safetensors.torch import load_file

    d = Path(path)
    if not d.is_dir():
        raise DllmError(f"filter path {str(d)!r} is not a directory (expected {WEIGHTS_FILE} + {CONFIG_FILE}); "
                        "train one with `dllm train-filter`")
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE) if not (d / f).is_file()]
    if missing:
        raise DllmError(f"filter directory {str(d)!r} lacks {', '.join(missing)}")
    try:
        config = json.loads((d / CONFIG_FILE).read_text())
        module = FilterMLP(int(config["block_length"]), int(config.get("hidden", 32)), int(config.get("layers", 2)))
        state = load_file(str(d / WEIGHTS_FILE))
        module.load_state_dict(state)
    except DllmError:
        raise
    except Exception as exc:  # noqa: BLE001 - any corruption is a user-facing error
        raise DllmError(f"cannot load filter from {str(d)!r}: {str(exc).splitlines()[0]}") from None
    if config.get("feature", FEATURE) != FEATURE:
        raise DllmError(f"filter {str(d)!r} uses feature {config.get('feature')!r}; only {FEATURE!r} is supported")
    return LearnedFilter(module.eval().requires_grad_(False), config, str(d))


# --------------------------------------------------------------------------------------------------------
# Features and trace collection


def block_features(conf: Tensor, candidates: Tensor, start: Tensor, end: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, the features of the block ``[start, end)`` (window columns) from ``conf``/``candidates`` [B, W].

    Returns ``features`` [B, L] (top-1 prob when undecided, 1.0 when decided, 0.0 beyond the block), ``cols``
    [B, L] (window column of each block position, clamped) and ``valid`` [B, L] (inside the block)."""
    length = int((end - start).max().clamp(min=1))
    ar = torch.arange(length, device=conf.device)
    cols_raw = start[:, None] + ar[None, :]
    valid = cols_raw < end[:, None]
    cols = cols_raw.clamp(0, conf.shape[1] - 1)
    c = conf.gather(1, cols).float()
    cand = candidates.gather(1, cols) & valid
    feats = torch.where(cand, c, torch.ones_like(c))
    feats = torch.where(valid, feats, torch.zeros_like(feats))
    return feats, cols, valid & cand


@dataclass
class FilterData:
    """Training examples: ``features`` / ``labels`` / ``valid`` [N, K] and the prompt each row came from."""

    features: Tensor
    labels: Tensor
    valid: Tensor
    prompt: Tensor
    block_length: int
    info: dict[str, Any] = field(default_factory=dict)

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


TRAJECTORIES = ("baseline", "oracle")


def collect_filter_data(model: Any, prompts: Sequence[Any], gen_length: int, block_length: int,
                        batch_size: int = 32, stop_at_eos: bool = True, trajectory: str = "baseline",
                        progress: Callable[[int, int], None] | None = None) -> FilterData:
    """Run the one-token-per-step baseline (``lowconf``, ``steps = gen_length``) on ``prompts`` (token-id
    lists or text) and label every traced block position against its final tokens.

    ``trajectory="baseline"`` takes the features along the baseline's own trace (default). ``"oracle"``
    replays the EGP oracle (``oracle_policy``) towards the baseline's output and takes the features along
    that trajectory, as the reference does (states closer to what a fast policy sees); it costs the oracle's
    few extra forwards per prompt."""
    from dllm.api import generate
    from dllm.errors import check_choice

    check_choice("trajectory", trajectory, TRAJECTORIES)
    if not prompts:
        raise DllmError("no prompts to collect filter data from")
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
                      info={"prompts": len(prompts), "gen_length": gen_length, "trajectory": trajectory, "nfe": nfe})
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


def train_filter(data: FilterData, hidden: int = 32, layers: int = 2, iterations: int = 3000, lr: float = 3e-3,
                 weight_decay: float = 0.01, val_fraction: float = 0.1, patience: int = 300, seed: int = 0,
                 target_precision: float = 0.99, device: str | torch.device = "cpu",
                 progress: Callable[[int, int, float, float], None] | None = None) -> tuple[FilterMLP, dict[str, Any]]:
    """Full-batch AdamW on masked BCE (as the reference notebook), validation split by prompt, early stop on
    validation loss (best weights kept). The suggested threshold is the smallest grid value whose validation
    precision reaches ``target_precision`` (false accepts <= 1% by default), else the reference's 0.96."""
    if len(data) == 0 or int(data.valid.sum()) == 0:
        raise DllmError("no training examples (every trace was empty); use more prompts")
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
    ok = [r for r in table if r["precision"] >= target_precision and r["accept_rate"] > 0]
    threshold = ok[0]["threshold"] if ok else DEFAULT_THRESHOLD
    tmask = data.valid & ~is_val[:, None]
    stats = {
        "iterations": it, "best_iteration": best[2], "val_loss": best[0],
        "train_loss": float(_masked_bce(torch.logit(probs.clamp(1e-6, 1 - 1e-6)), data.labels.float(), tmask.float())),
        "train_prompts": int(prompts.numel() - n_val), "val_prompts": int(n_val),
        "threshold": threshold, "target_precision": target_precision, "val_thresholds": table,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return module, stats


# --------------------------------------------------------------------------------------------------------
# Oracle bound


class _OracleCommit:
    """Modifier of the EGP oracle: commit every candidate whose proposal equals its target token; when none
    does, commit the most confident candidate with its target token (the reference's stuck guard writes the
    target block instead), so the output always equals the targets."""

    def __init__(self, targets: Tensor) -> None:
        self.targets = targets  # [B, gen_length]

    def __call__(self, decision: Any, proposal: Any, logits: Tensor, ctx: Any, state: Any) -> Any:
        from dllm.samplers.selectors import most_confident

        b, w = ctx.candidates.shape
        off = ctx.window_start - ctx.gen_start + torch.arange(w, device=ctx.candidates.device)
        tgt = self.targets.to(ctx.candidates.device)[:, off.clamp(0, self.targets.shape[1] - 1)]
        match = ctx.candidates & (proposal.tokens == tgt)
        stuck = ctx.candidates.any(-1) & ~match.any(-1)
        forced = most_confident(proposal.confidence) & stuck[:, None]
        decision.commit = match | forced
        decision.tokens = torch.where(decision.commit, tgt, decision.tokens)
        return decision


def oracle_policy(targets: Tensor) -> Any:
    """The "Extremely Greedy Parallel" oracle (Learn2PD, spec §1.4) for one batch: ``targets`` [B, gen_length]
    are the final tokens of the slow decode of the same prompts (same batch order)."""
    from dllm.samplers.base import Policy
    from dllm.samplers.scoring import ProbabilityScorer
    from dllm.samplers.selectors import QuotaSelector

    return Policy("oracle", ProbabilityScorer(0.0), QuotaSelector(), modifiers=[_OracleCommit(targets.clone())])


def oracle_nfe(trace: Any, final: Tensor, end_ids: Sequence[int] = ()) -> list[int]:
    """Per row, the forwards an oracle needs that commits every position as soon as the current prediction
    equals its final token, measured along the (one-token-per-step) baseline ``trace`` of ``final``.

    Per block, the oracle finishes after ``1 + max_i (first step, counted from the block's first step, at
    which the proposal at i equals final[i])``; a position committed by the baseline counts at the latest at
    its commit step. In the block holding the row's first end token, only the positions up to that token
    count (the engine stops the row there). An approximation: a real oracle run would see different
    contexts once it commits early, so this is a reference point, not a strict bound."""
    b, g = final.shape
    gs = trace.gen_start
    ends = torch.tensor(list(end_ids), dtype=final.dtype)
    first = torch.full((b, g), -1, dtype=torch.long)  # global step of the first match
    block_of = torch.full((b, g), -1, dtype=torch.long)  # block start (gen offset) at that time
    block_open: dict[tuple[int, int], int] = {}  # (row, block start) -> first step of that block
    for s in trace.steps:
        ws = s.window_start
        for r in range(b):
            if not bool(s.active[r]):
                continue
            key = (r, int(s.block_start[r]) - gs)
            block_open.setdefault(key, s.step)
        prop = trace.to_generation_coords(s.proposed, ws, -1)
        cand = trace.to_generation_coords(s.candidates, ws, False)
        hit = cand & (prop == final) & (first < 0)
        first[hit] = s.step
        bstart = (s.block_start - gs)[:, None].expand(b, g)
        block_of[hit] = bstart[hit]
    out = []
    for r in range(b):
        row = final[r]
        is_end = torch.isin(row, ends) if ends.numel() else torch.zeros_like(row, dtype=torch.bool)
        cut = int(is_end.nonzero()[0, 0]) + 1 if bool(is_end.any()) else g
        per_block: dict[int, int] = {}
        for i in range(cut):
            bsi = int(block_of[r, i])
            if bsi < 0 or int(first[r, i]) < 0:
                continue  # never proposed as a candidate (e.g. filled after an early stop)
            need = int(first[r, i]) - block_open[(r, bsi)] + 1
            per_block[bsi] = max(per_block.get(bsi, 0), need)
        out.append(sum(per_block.values()))
    return out
