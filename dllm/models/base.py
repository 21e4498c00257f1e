"""The one model interface the engine, caches and policies see.

A ``DiffusionLM`` maps tokens at absolute positions to logits. It knows nothing about policies; caches talk
to it through a ``KVHook`` that each attention layer calls with the fresh (post-RoPE) keys/values of the
tokens it was given and that returns the keys/values to attend over. Keys are stored post-RoPE: every canvas
slot keeps its absolute position for the whole generation, so rotating once is exact and saves work.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from dllm.registry import Registry

#: model kinds by config.json ``model_type``; each implementation module registers its class
MODELS = Registry("model kind", "dllm.models")


class KVHook(Protocol):
    """Called by every attention layer; lets a cache manager substitute or extend keys/values."""

    def __call__(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """k, v: fresh keys/values [B, Hkv, T, D] of the forwarded tokens (RoPE applied).

        Returns (keys, values, key_mask) to attend over; key_mask [B, Tk] bool (True = attend) or None.
        """
        ...


@dataclass
class SpecialTokens:
    """Ids the engine needs. ``eot`` is the end-of-turn token of chat models (LLaDA ``<|eot_id|>``, Dream
    ``<|im_end|>``); both EOS and EOT end an answer."""

    mask: int
    eos: int
    pad: int
    bos: int | None = None
    eot: int | None = None
    extra_stop: tuple[int, ...] = field(default_factory=tuple)

    @property
    def end_ids(self) -> tuple[int, ...]:
        ids = [self.eos] + ([self.eot] if self.eot is not None else []) + list(self.extra_stop)
        return tuple(dict.fromkeys(ids))


class DiffusionLM(nn.Module):
    """Base class of native masked-diffusion LMs. Subclasses define the architecture and the exact
    checkpoint parameter names; this class holds what is common (special ids, shift, saving)."""

    kind: str = ""
    #: Dream predicts position i from the output at i-1 (it was adapted from an AR model); LLaDA does not.
    logit_shift: bool = False

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.special: SpecialTokens | None = None
        self.tokenizer: Any = None
        self.name_or_path: str = ""
        #: decoding defaults shipped with the checkpoint (generation_config.json "dllm" entry)
        self.generation_defaults: dict[str, Any] = {}

    # --- architecture facts the cache and engine need -------------------------------------------------
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_length: int

    @property
    def mask_id(self) -> int:
        assert self.special is not None
        return self.special.mask

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor | None = None,
        key_mask: Tensor | None = None,
        kv_hook: KVHook | None = None,
        logits_index: Tensor | slice | None = None,
    ) -> Tensor:
        """Raw (unshifted) logits.

        input_ids [B, T] at absolute ``position_ids`` [B, T] (default 0..T-1); ``key_mask`` [B, T] marks the
        tokens that may be attended to (padding False) when no hook is given; ``logits_index`` selects the
        input positions whose logits are needed (a slice, or [B, W] indices), so the vocabulary projection is
        only paid where a policy reads it.
        """
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        h = self.embed(input_ids)
        for i, layer in enumerate(self.layers()):
            h = layer(h, position_ids, key_mask, kv_hook, i)
        if logits_index is not None:
            if isinstance(logits_index, slice):
                h = h[:, logits_index]
            else:
                h = torch.gather(h, 1, logits_index[..., None].expand(-1, -1, h.shape[-1]))
        return self.head(h)

    # subclasses implement these three
    def embed(self, input_ids: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def layers(self) -> list[nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    def head(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- saving in the real Hugging Face layout ---------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, max_shard_bytes: int | None = None) -> None:
        """Write ``config.json`` + ``model.safetensors`` (or shards + index) with the real parameter names,
        plus the tokenizer when one is attached, so ``dllm.load_model`` and the reference code load it."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = dict(self.config)
        config["torch_dtype"] = str(self.dtype).removeprefix("torch.")
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if max_shard_bytes is None:
            save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        else:
            shards: list[dict[str, Tensor]] = [{}]
            size = 0
            for key, tensor in state.items():
                nbytes = tensor.numel() * tensor.element_size()
                if shards[-1] and size + nbytes > max_shard_bytes:
                    shards.append({})
                    size = 0
                shards[-1][key] = tensor
                size += nbytes
            weight_map = {}
            for i, shard in enumerate(shards):
                name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(out / name), metadata={"format": "pt"})
                weight_map.update({k: name for k in shard})
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(out))
