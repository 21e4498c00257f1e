"""Native Dream (Dream-org/Dream-v0-*-7B): the Qwen2.5 layout made bidirectional.

Exact Qwen2 parameter names (``model.layers.{i}.self_attn.q_proj.bias`` ...), q/k/v with bias, GQA, RoPE
cos/sin cast to the activation dtype before rotating. Dream keeps next-token alignment: the prediction for
position i is read at output i-1 (``logit_shift``); the cache managers handle that, not this module.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from dllm.errors import DllmError
from dllm.models.base import MODELS, DiffusionLM
from dllm.models.layers import ACTIVATIONS, RMSNorm, rotary_self_attention

#: Dream-v0-7B config.json values (Qwen2.5-7B dims; tiny checkpoints override dims).
DREAM_7B_CONFIG: dict[str, Any] = {
    "architectures": ["DreamModel"],
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_dream.DreamConfig",
        "AutoModel": "modeling_dream.DreamModel",
    },
    "bos_token_id": 151665,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "mask_token_id": 151666,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "Dream",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "pad_token_id": 151643,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2",
    "use_cache": False,
    "use_sliding_window": False,
    "vocab_size": 152064,
}


class DreamAttention(nn.Module):
    def __init__(self, model: "DreamModel") -> None:
        super().__init__()
        d, hd = model.hidden_size, model.head_dim
        self.q_proj = nn.Linear(d, model.num_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, model.num_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, model.num_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(model.num_heads * hd, d, bias=False)


class DreamMLP(nn.Module):
    def __init__(self, model: "DreamModel") -> None:
        super().__init__()
        d, inner = model.hidden_size, model.intermediate_size
        self.gate_proj = nn.Linear(d, inner, bias=False)
        self.up_proj = nn.Linear(d, inner, bias=False)
        self.down_proj = nn.Linear(inner, d, bias=False)
        self.act = ACTIVATIONS[model.config.get("hidden_act", "silu")]

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DreamLayer(nn.Module):
    def __init__(self, model: "DreamModel") -> None:
        super().__init__()
        eps = float(model.config.get("rms_norm_eps", 1e-6))
        self.model_ref = [model]
        self.self_attn = DreamAttention(model)
        self.mlp = DreamMLP(model)
        self.input_layernorm = RMSNorm(model.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(model.hidden_size, eps)

    def forward(self, h: Tensor, positions: Tensor, key_mask: Tensor | None, kv_hook, layer: int) -> Tensor:
        a = self.input_layernorm(h)
        att = self.self_attn
        h = h + att.o_proj(rotary_self_attention(self.model_ref[0], a, att.q_proj, att.k_proj, att.v_proj, positions,
                                                 key_mask, kv_hook, layer))
        return h + self.mlp(self.post_attention_layernorm(h))


@MODELS.register("dream", "Dream (Dream-7B): bidirectional Qwen2 layers, predicts position i from i-1 (logit shift)")
class DreamModel(DiffusionLM):
    """Dream with the exact hub parameter names (``model.embed_tokens.weight``, ``lm_head.weight`` ...)."""

    kind = "dream"
    logit_shift = True
    #: HF Qwen2 casts cos/sin to the activation dtype and rotates there (LLaDA rotates in float32)
    rope_full_precision = False

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        c = self.config
        if c.get("rope_scaling"):
            raise DllmError(f"unsupported Dream config: rope_scaling {c['rope_scaling']!r} (only null)")
        if c.get("hidden_act", "silu") not in ACTIVATIONS:
            raise DllmError(f"unsupported Dream config: hidden_act {c.get('hidden_act')!r}; choose one of: {', '.join(ACTIVATIONS)}")
        self.hidden_size = int(c["hidden_size"])
        self.num_heads = int(c["num_attention_heads"])
        self.num_kv_heads = int(c.get("num_key_value_heads") or self.num_heads)
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise DllmError(
                f"unsupported Dream config: hidden_size {self.hidden_size}, heads {self.num_heads}, kv heads {self.num_kv_heads} do not divide"
            )
        self.head_dim = self.hidden_size // self.num_heads
        self.intermediate_size = int(c["intermediate_size"])
        self.num_layers = int(c["num_hidden_layers"])
        self.vocab_size = int(c["vocab_size"])
        self.rope_theta = float(c.get("rope_theta", 10000.0))
        self.max_length = int(c.get("max_position_embeddings", 2048))
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(self.vocab_size, self.hidden_size)
        self.model.layers = nn.ModuleList(DreamLayer(self) for _ in range(self.num_layers))
        self.model.norm = RMSNorm(self.hidden_size, float(c.get("rms_norm_eps", 1e-6)))
        if not c.get("tie_word_embeddings", False):
            self.lm_head = nn.Linear(self.hidden_size, self.vocab_size, bias=False)

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.model.embed_tokens(input_ids)

    def layers(self) -> list[nn.Module]:
        return list(self.model.layers)

    def head(self, h: Tensor) -> Tensor:
        h = self.model.norm(h)
        if hasattr(self, "lm_head"):
            return self.lm_head(h)
        return h @ self.model.embed_tokens.weight.t()
