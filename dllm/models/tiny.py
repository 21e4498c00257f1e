"""Tiny random-weight checkpoints in the exact published format (config keys, parameter names, tokenizer
files), for tests and benchmarks on machines that cannot download the real 8B weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from dllm.models.base import DiffusionLM
from dllm.models.dream import DREAM_7B_CONFIG
from dllm.models.llada import LLADA_8B_CONFIG
from dllm.models.loading import build_model

# Special ids of the tiny tokenizers: small numbers so tiny vocabularies stay tiny.
# Id 0 is the unknown token; PAD shares EOS as in the published LLaDA and Dream tokenizers.
TINY_SPECIALS = {"unk": 0, "bos": 1, "eos": 2, "eot": 3, "mask": 4, "header_start": 5, "header_end": 6}
_SPECIAL_STRINGS = {
    "llada": {"unk": "<|unk|>", "bos": "<|startoftext|>", "eos": "<|endoftext|>", "eot": "<|eot_id|>", "mask": "<|mdm_mask|>",
              "header_start": "<|start_header_id|>", "header_end": "<|end_header_id|>"},
    "dream": {"unk": "<|unk|>", "bos": "<|beginoftext|>", "eos": "<|endoftext|>", "eot": "<|im_end|>", "mask": "<|mask|>",
              "header_start": "<|im_start|>", "header_end": "<|im_sep|>"},
}
LLADA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)


def tiny_config(kind: str, vocab_size: int = 256, hidden: int = 64, layers: int = 2, heads: int = 4,
                kv_heads: int | None = None, intermediate: int = 128, max_length: int = 512) -> dict[str, Any]:
    """The published config with small dimensions and small special ids (pad=eos=0 is avoided on purpose)."""
    kv_heads = kv_heads or heads
    if kind == "llada":
        cfg = dict(LLADA_8B_CONFIG)
        cfg.update(d_model=hidden, n_heads=heads, n_kv_heads=kv_heads, n_layers=layers, mlp_hidden_size=intermediate,
                   vocab_size=vocab_size, embedding_size=vocab_size, max_sequence_length=max_length,
                   mask_token_id=TINY_SPECIALS["mask"], eos_token_id=TINY_SPECIALS["eos"], pad_token_id=TINY_SPECIALS["eos"])
    elif kind == "dream":
        cfg = dict(DREAM_7B_CONFIG)
        cfg.update(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads, num_hidden_layers=layers,
                   intermediate_size=intermediate, vocab_size=vocab_size, max_position_embeddings=max_length,
                   max_window_layers=layers, mask_token_id=TINY_SPECIALS["mask"], eos_token_id=TINY_SPECIALS["eos"],
                   pad_token_id=TINY_SPECIALS["eos"], bos_token_id=TINY_SPECIALS["bos"])
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return cfg


def tiny_word_tokenizer(kind: str, vocab_size: int):
    """A WordLevel tokenizer: words ``w5`` .. ``w{V-1}`` plus the real special-token strings at small ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    strings = _SPECIAL_STRINGS[kind]
    vocab = {strings[name]: idx for name, idx in TINY_SPECIALS.items()}
    vocab.update({f"w{i}": i for i in range(len(TINY_SPECIALS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=strings["bos"], eos_token=strings["eos"], pad_token=strings["eos"],
        mask_token=strings["mask"], unk_token=strings["unk"],
        additional_special_tokens=[strings["eot"], strings["header_start"], strings["header_end"]],
    )
    if kind == "llada":
        fast.chat_template = LLADA_CHAT_TEMPLATE
    else:
        fast.chat_template = (
            "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'] + '<|im_end|>' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
        )
    return fast


def make_tiny_model(kind: str, seed: int = 0, dtype: torch.dtype = torch.float32, tokenizer: bool = True,
                    **dims: Any) -> DiffusionLM:
    """A random tiny model in memory (same code path as a loaded one, tokenizer attached)."""
    cfg = tiny_config(kind, **dims)
    model = build_model(cfg, seed=seed, dtype=dtype).eval().requires_grad_(False)
    if tokenizer:
        from dllm.models.loading import special_tokens

        model.tokenizer = tiny_word_tokenizer(kind, cfg["vocab_size"])
        model.special = special_tokens(cfg, model.tokenizer, "tiny")
    return model


def make_tiny_checkpoint(directory: str | os.PathLike, kind: str = "llada", seed: int = 0,
                         dtype: torch.dtype = torch.float32, max_shard_bytes: int | None = None, **dims: Any) -> Path:
    """Write a tiny random checkpoint (config.json, safetensors, tokenizer) that ``load_model`` loads."""
    out = Path(directory)
    model = make_tiny_model(kind, seed=seed, dtype=dtype, **dims)
    model.save_pretrained(out, max_shard_bytes=max_shard_bytes)
    (out / "generation_config.json").write_text(json.dumps({"_from_model_config": True}) + "\n")
    return out


def sharpen(model: DiffusionLM, body: float = 8.0, head: float = 50.0) -> DiffusionLM:
    """Scale a random model's weights so its confidences spread over (0, 1) like a trained model's, instead of
    being uniformly tiny: then thresholds select several tokens per step and tests of parallel rules can fail."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("model.transformer.ff_out.weight", "lm_head.weight"):
                p.mul_(head)
            elif "norm" not in name and "ln_f" not in name:
                p.mul_(body)
    return model
