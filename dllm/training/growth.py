"""Function-preserving depth growth: add transformer blocks to a trained model without changing its outputs.

Why: a tiny model that has learnt the easy families (copy, reverse) can run out of capacity for the hard
ones (carries in ``add``, reading numbers in ``gsm-mini``). Starting a bigger model from scratch repays the
long "answer-length only" plateau; growing the trained one keeps what it knows. New blocks are interleaved
between the old ones and their two residual output projections (attention out, MLP down) are zero, so each
new block adds exactly zero until training moves it (the other weights get gradients from the start).
"""

from __future__ import annotations

import torch

from dllm.errors import DllmError
from dllm.models.base import DiffusionLM
from dllm.models.loading import build_model

#: kind -> (config key of the layer count, state-dict prefix of block i, residual output projections)
_LAYOUT: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "llada": ("n_layers", "model.transformer.blocks.{i}.", ("attn_out.weight", "ff_out.weight")),
    "dream": ("num_hidden_layers", "model.layers.{i}.", ("self_attn.o_proj.weight", "mlp.down_proj.weight")),
}


def growth_order(old_layers: int, new_layers: int) -> list[int | None]:
    """Block order after growth: old block indices, with ``None`` (a new block) after every
    ``old_layers // new_layers`` old blocks, e.g. 4 + 2 -> [0, 1, None, 2, 3, None]."""
    if new_layers < 1:
        raise DllmError(f"new_layers must be >= 1, got {new_layers}")
    if new_layers > old_layers:
        raise DllmError(f"cannot add {new_layers} blocks to a {old_layers}-block model; add at most {old_layers}")
    every = old_layers // new_layers
    order: list[int | None] = []
    added = 0
    for i in range(old_layers):
        order.append(i)
        if (i + 1) % every == 0 and added < new_layers:
            order.append(None)
            added += 1
    return order


def grow_layers(model: DiffusionLM, new_layers: int, seed: int = 0) -> DiffusionLM:
    """A copy of ``model`` with ``new_layers`` more blocks that computes exactly the same logits.

    The new blocks' norms and input projections come from ``build_model(config, seed)``; their output
    projections are zero. Tokenizer and special tokens are carried over.
    """
    if model.kind not in _LAYOUT:
        raise DllmError(f"cannot grow a {model.kind!r} model; supported: {', '.join(_LAYOUT)}")
    key, prefix, outputs = _LAYOUT[model.kind]
    old_layers = int(model.config[key])
    order = growth_order(old_layers, new_layers)
    config = dict(model.config)
    config[key] = old_layers + new_layers
    if "max_window_layers" in config:  # Dream: keep "every layer uses full attention"
        config["max_window_layers"] = config[key]
    grown = build_model(config, seed=seed).to(device=model.device, dtype=next(model.parameters()).dtype)
    old = model.state_dict()
    state = grown.state_dict()
    for name in state:
        if not any(name.startswith(prefix.format(i=j)) for j in range(len(order))):
            state[name] = old[name].clone()
    for j, source in enumerate(order):
        new_prefix = prefix.format(i=j)
        for name in state:
            if not name.startswith(new_prefix):
                continue
            rest = name[len(new_prefix):]
            if source is not None:
                state[name] = old[prefix.format(i=source) + rest].clone()
            elif rest in outputs:
                state[name] = torch.zeros_like(state[name])
    grown.load_state_dict(state)
    grown.tokenizer, grown.special = model.tokenizer, model.special
    grown.generation_defaults = dict(getattr(model, "generation_defaults", {}) or {})
    return grown
