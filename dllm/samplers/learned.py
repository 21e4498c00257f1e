"""Learn2PD's learned filter at run time: the filter model, its file format, its features and the ``Selector``.

The filter (Learn2PD, docs/methods.md#learn2pd) is a tiny MLP over the current block's per-position top-1
probabilities, ``Linear(K, H) -> ReLU -> Linear(H, K)`` (K = block length = 32 and H = 32 in the reference;
2,112 parameters), predicting per position "the current prediction already equals the final token". Its
parameter names are the reference's (``linear1.weight`` ...), so the released state dict maps onto it
unchanged. It is saved as ``filter.safetensors`` plus ``filter_config.json`` holding the block length (a filter
only fits the block size it was trained for), the hidden size, the suggested accept threshold and the training
statistics. Training lives in ``dllm.training.filter``.

Features: for each position of the row's current block, the top-1 probability if it is undecided, **1.0 if it
is already decided** (a **Quirk**: the reference feeds the model's output there), and 0.0 as right padding when
the block is shorter than K. Blocks longer than K (adaptive blocks) are cut into consecutive K-chunks.

Per step: the filter sees the row's current-block features (``block_features``: top-1
probability of undecided positions, 1.0 for decided ones, zero padding for short blocks) and accepts the
undecided positions with ``sigmoid(output) > threshold`` (strict, as the reference). The commit set is the
accepted positions plus LLaDA's quota of most confident positions (``steps = gen_length`` gives exactly one:
"accepted plus the most confident one"); the quota is at least one and never reaches outside the block
(**Quirk**: in the reference, with ``steps < gen_length`` and most of a block accepted, the quota's top-k can
pick masked positions of later blocks). The accepted set is left in the policy state under
``learnedfilter.accepted`` so EoTP's reference mode can apply the L2P+EoT rule.

Blocks longer than the filter's block length (adaptive blocks) are scored in consecutive chunks of that
length; shorter blocks are zero-padded (the reference's trick for a truncated canvas).
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dllm.assets import ASSETS_DIR
from dllm.errors import DllmError
from dllm.samplers.base import PolicyState, Proposal, StepContext
from dllm.samplers.eotp import FILTER_ACCEPT_KEY
from dllm.samplers.selectors import llada_quota, top_k_mask

WEIGHTS_FILE = "filter.safetensors"
CONFIG_FILE = "filter_config.json"
FEATURE = "top1_prob"
LAYER_CHOICES = (1, 2, 4)
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
# Features (shared with filter training, so the two cannot drift apart)


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


def default_filter_path() -> Path:
    """The filter shipped for the tiny LLaDA model (``dllm/assets/tiny-llada-filter``)."""
    return ASSETS_DIR / "tiny-llada-filter"


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float):
    return load_filter(path)


def load_filter_cached(path: str | os.PathLike):
    """``load_filter`` memoised on (path, modification time): policies are built per ``generate`` call."""
    p = Path(path)
    try:
        mtime = max((p / WEIGHTS_FILE).stat().st_mtime, (p / CONFIG_FILE).stat().st_mtime)
    except OSError:
        return load_filter(p)  # raises the one-line error
    return _load_cached(str(p.resolve()), mtime)


class FilterSelector:
    def __init__(self, learned, threshold: float) -> None:
        self.learned = learned
        self.threshold = float(threshold)
        self._module = learned.module
        self._device: torch.device | None = None

    def _on(self, device: torch.device):
        if self._device != device:
            self._module = self.learned.module.to(device)
            self._device = device
        return self._module

    def init_state(self, state: PolicyState) -> None:
        state.values[FILTER_ACCEPT_KEY] = None

    def accept(self, proposal: Proposal, ctx: StepContext) -> Tensor:
        """[B, W] bool: undecided block positions the filter accepts."""
        cand = ctx.candidates
        accepted = torch.zeros_like(cand)
        if not bool(cand.any()):
            return accepted
        start = (ctx.block_start - ctx.window_start).clamp(min=0)
        end = (ctx.block_end - ctx.window_start).clamp(min=0)
        feats, cols, ok = block_features(proposal.confidence, cand, start, end)
        with torch.no_grad():
            probs = self._on(feats.device).predict(feats)
        hit = ok & (probs > self.threshold) & ctx.active[:, None]
        r, j = hit.nonzero(as_tuple=True)
        accepted[r, cols[r, j]] = True
        return accepted & cand

    def __call__(self, proposal: Proposal, ctx: StepContext, state: PolicyState) -> Tensor:
        accepted = self.accept(proposal, ctx)
        state.values[FILTER_ACCEPT_KEY] = accepted
        k = llada_quota(ctx.block_mask_count, ctx.block_steps, ctx.step).clamp(min=1)
        return accepted | top_k_mask(proposal.confidence, k)
