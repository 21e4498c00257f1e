"""Native LLaDA (GSAI-ML/LLaDA-8B-*, LLaDA-1.5) matching the published checkpoint exactly.

Parameter names are those of the hub ``modeling_llada.py`` (``model.transformer.*``), the config keys those
of its ``config.json`` (note ``activation_type``). Attention is bidirectional; unlike the reference we honour
a key mask so left-padded batches give the same result as single sequences.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from dllm.errors import DllmError
from dllm.models.base import MODELS, DiffusionLM
from dllm.models.layers import ACTIVATIONS, RMSNorm, rotary_self_attention

#: Every key of the 8B checkpoint's config.json with its published value (tiny checkpoints override dims).
LLADA_8B_CONFIG: dict[str, Any] = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 4096,
    "embedding_dropout": 0.0,
    "embedding_size": 126464,
    "eos_token_id": 126081,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 126336,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "pad_token_id": 126081,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 126464,
    "weight_tying": False,
}


class LLaDABlock(nn.Module):
    """The ``llama`` block: separate q/k/v, gate (``ff_proj``) times up (``up_proj``), down (``ff_out``)."""

    def __init__(self, model: "LLaDAModel") -> None:
        super().__init__()
        c = model.config
        d, hd = model.d_model, model.head_dim
        bias = bool(c.get("include_bias", False))
        qkv_bias = bias or bool(c.get("include_qkv_bias", False))
        norm_bias = c.get("bias_for_layer_norm")
        norm_bias = bias if norm_bias is None else bool(norm_bias)
        eps = float(c.get("rms_norm_eps", 1e-5))
        self.model_ref = [model]  # avoid registering the parent as a submodule
        self.attn_norm = RMSNorm(d, eps, norm_bias)
        self.q_proj = nn.Linear(d, model.num_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(d, model.num_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, model.num_kv_heads * hd, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=bias)
        self.ff_norm = RMSNorm(d, eps, norm_bias)
        self.ff_proj = nn.Linear(d, model.mlp_hidden, bias=bias)
        self.up_proj = nn.Linear(d, model.mlp_hidden, bias=bias)
        self.ff_out = nn.Linear(model.mlp_hidden, d, bias=bias)
        self.act = ACTIVATIONS[c.get("activation_type", "silu")]

    def forward(self, h: Tensor, positions: Tensor, key_mask: Tensor | None, kv_hook, layer: int) -> Tensor:
        a = self.attn_norm(h)
        attn = rotary_self_attention(self.model_ref[0], a, self.q_proj, self.k_proj, self.v_proj, positions, key_mask,
                                     kv_hook, layer)
        h = h + self.attn_out(attn)
        f = self.ff_norm(h)
        return h + self.ff_out(self.act(self.ff_proj(f)) * self.up_proj(f))


@MODELS.register("llada", "LLaDA (LLaDA-8B, LLaDA-1.5): bidirectional Llama-style blocks, no logit shift")
class LLaDAModel(DiffusionLM):
    """LLaDA with the exact hub parameter names (``model.transformer.wte.weight`` ...)."""

    kind = "llada"
    logit_shift = False

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        c = self.config
        self._validate(c)
        self.d_model = int(c["d_model"])
        self.num_heads = int(c["n_heads"])
        n_kv = c.get("n_kv_heads")
        if c.get("multi_query_attention"):
            n_kv = 1
        self.num_kv_heads = int(n_kv or self.num_heads)
        self.head_dim = self.d_model // self.num_heads
        self.num_layers = int(c["n_layers"])
        self.mlp_hidden = int(c.get("mlp_hidden_size") or c.get("mlp_ratio", 4) * self.d_model)
        self.vocab_size = int(c.get("embedding_size") or c["vocab_size"])
        self.rope_theta = float(c.get("rope_theta", 10000.0))
        self.rope_full_precision = bool(c.get("rope_full_precision", True))
        self.max_length = int(c.get("max_sequence_length", 4096))
        eps = float(c.get("rms_norm_eps", 1e-5))
        norm_bias = c.get("bias_for_layer_norm")
        norm_bias = bool(c.get("include_bias", False)) if norm_bias is None else bool(norm_bias)

        transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(self.vocab_size, self.d_model),
                "blocks": nn.ModuleList(LLaDABlock(self) for _ in range(self.num_layers)),
                "ln_f": RMSNorm(self.d_model, eps, norm_bias),
            }
        )
        if not c.get("weight_tying", False):
            transformer["ff_out"] = nn.Linear(self.d_model, self.vocab_size, bias=bool(c.get("include_bias", False)))
        self.model = nn.Module()
        self.model.transformer = transformer

    @staticmethod
    def _validate(c: dict[str, Any]) -> None:
        checks = [
            (c.get("rope", True), "LLaDA checkpoints need rope=true"),
            (not c.get("alibi", False), "alibi=true is not supported"),
            (c.get("block_type", "llama") == "llama", f"block_type {c.get('block_type')!r} is not supported (only 'llama')"),
            (c.get("layer_norm_type", "rms") == "rms", f"layer_norm_type {c.get('layer_norm_type')!r} is not supported (only 'rms')"),
            (int(c.get("block_group_size", 1)) == 1, "block_group_size > 1 is not supported"),
            (c.get("activation_type", "silu") in ACTIVATIONS,
             f"activation_type {c.get('activation_type')!r} is not supported; choose one of: {', '.join(ACTIVATIONS)}"),
            (not c.get("attention_layer_norm", False), "attention_layer_norm=true is not supported"),
        ]
        for ok, message in checks:
            if not ok:
                raise DllmError(f"unsupported LLaDA config: {message}")
        if int(c["d_model"]) % int(c["n_heads"]):
            raise DllmError(f"unsupported LLaDA config: d_model {c['d_model']} is not divisible by n_heads {c['n_heads']}")

    def embed(self, input_ids: Tensor) -> Tensor:
        h = self.model.transformer["wte"](input_ids)
        if self.config.get("input_emb_norm", False):
            h = h * math.sqrt(self.d_model)
        return h

    def layers(self) -> list[nn.Module]:
        return list(self.model.transformer["blocks"])

    def head(self, h: Tensor) -> Tensor:
        tr = self.model.transformer
        h = tr["ln_f"](h)
        logits = tr["ff_out"](h) if "ff_out" in tr else h @ tr["wte"].weight.t()
        if self.config.get("scale_logits", False):
            logits = logits * (1 / math.sqrt(self.d_model))
        return logits
