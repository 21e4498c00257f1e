"""Golden tests for the native LLaDA / Dream models and the checkpoint loader.

Written from the documented checkpoint formats (docs/models.md), independently of the implementation:

* tiny checkpoints carry exactly the published config keys and parameter names (docs/models.md#llada-config,
  #llada-parameters, #dream-config, #dream-parameters);
* they load through ``dllm.load_model`` (single file and sharded), in bf16/fp16/fp32, and round-trip exactly;
* an independent architecture cross-check runs the same weights through ``transformers``' Llama (for LLaDA,
  with renamed parameters) and Qwen2 (for Dream, same names) made bidirectional, and compares logits;
* left-padded rows with a key mask give the unpadded logits;
* every user mistake in a checkpoint is a one-line ``DllmError``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import dllm
from dllm.errors import DllmError
from dllm.models.tiny import make_tiny_checkpoint, make_tiny_model, tiny_config

V, D, LAYERS, HEADS, INTER = 256, 64, 2, 4, 128

# --- the published formats, re-typed from docs/models.md ------------------------------------------------

LLADA_CONFIG_KEYS = {  # docs/models.md#llada-config: every key a LLaDA config.json should carry
    "d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "mlp_ratio", "vocab_size", "embedding_size",
    "rope", "rope_theta", "rope_full_precision", "alibi", "max_sequence_length", "include_bias", "include_qkv_bias",
    "bias_for_layer_norm", "block_type", "activation_type", "layer_norm_type", "layer_norm_with_affine",
    "rms_norm_eps", "attention_layer_norm", "weight_tying", "scale_logits", "input_emb_norm", "block_group_size",
    "attention_dropout", "residual_dropout", "embedding_dropout", "flash_attention", "mask_token_id",
    "eos_token_id", "pad_token_id", "init_device", "init_fn", "init_std", "init_cutoff_factor", "precision",
    "use_cache", "multi_query_attention", "architectures", "auto_map", "transformers_version", "torch_dtype",
    "model_type",
}
DREAM_CONFIG_KEYS = {  # docs/models.md#dream-config
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache",
    "tie_word_embeddings", "rope_theta", "rope_scaling", "use_sliding_window", "sliding_window", "max_window_layers",
    "attention_dropout", "mask_token_id", "pad_token_id", "bos_token_id", "eos_token_id", "auto_map", "model_type",
}


def llada_expected_keys(n_layers: int, d: int, kv_dim: int, mlp: int, emb: int) -> dict[str, tuple[int, ...]]:
    """docs/models.md#llada-parameters: the complete LLaDA state dict (block_group_size 1, no tying, no biases)."""
    keys = {"model.transformer.wte.weight": (emb, d), "model.transformer.ln_f.weight": (d,),
            "model.transformer.ff_out.weight": (emb, d)}
    for i in range(n_layers):
        p = f"model.transformer.blocks.{i}."
        keys.update({
            p + "attn_norm.weight": (d,), p + "q_proj.weight": (d, d), p + "k_proj.weight": (kv_dim, d),
            p + "v_proj.weight": (kv_dim, d), p + "attn_out.weight": (d, d), p + "ff_norm.weight": (d,),
            p + "ff_proj.weight": (mlp, d), p + "up_proj.weight": (mlp, d), p + "ff_out.weight": (d, mlp),
        })
    return keys


def dream_expected_keys(n_layers: int, d: int, kv_dim: int, inter: int, vocab: int) -> dict[str, tuple[int, ...]]:
    """Spec 2.1: Qwen2 names; q/k/v with bias, o_proj without."""
    keys = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,), "lm_head.weight": (vocab, d)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        keys.update({
            p + "self_attn.q_proj.weight": (d, d), p + "self_attn.q_proj.bias": (d,),
            p + "self_attn.k_proj.weight": (kv_dim, d), p + "self_attn.k_proj.bias": (kv_dim,),
            p + "self_attn.v_proj.weight": (kv_dim, d), p + "self_attn.v_proj.bias": (kv_dim,),
            p + "self_attn.o_proj.weight": (d, d),
            p + "mlp.gate_proj.weight": (inter, d), p + "mlp.up_proj.weight": (inter, d),
            p + "mlp.down_proj.weight": (d, inter),
            p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
        })
    return keys


def file_keys(directory: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every tensor in the checkpoint's safetensors file(s) with its shape and dtype."""
    index = directory / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    out = {}
    for name in files:
        with safe_open(str(directory / name), framework="pt") as f:
            for k in f.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                t = f.get_tensor(k)
                assert k not in out, f"{k} stored twice"
                out[k] = (tuple(t.shape), t.dtype)
    return out


PROMPT = torch.tensor([[1, 17, 99, 5, 200, 42, 7, 4, 4, 4, 4, 4, 4]])  # BOS, words, then masks (id 4)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Tiny checkpoints written once per module: llada (MHA), dream (GQA: 2 kv heads for 4 heads)."""
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "llada": make_tiny_checkpoint(root / "llada", "llada", seed=11),
        "dream": make_tiny_checkpoint(root / "dream", "dream", seed=12, kv_heads=2),
    }


def _logits(model, ids=PROMPT):
    with torch.no_grad():
        return model(ids)


# --- format -----------------------------------------------------------------------------------------------

def test_llada_checkpoint_has_exact_published_keys(ckpts):
    d = ckpts["llada"]
    config = json.loads((d / "config.json").read_text())
    assert LLADA_CONFIG_KEYS <= set(config), sorted(LLADA_CONFIG_KEYS - set(config))
    assert config["model_type"] == "llada" and config["activation_type"] == "silu" and config["block_type"] == "llama"
    assert "activation" not in config  # the key is activation_type (docs/models.md#llada-config)
    hd = config["d_model"] // config["n_heads"]
    want = llada_expected_keys(config["n_layers"], config["d_model"], config["n_kv_heads"] * hd,
                               config["mlp_hidden_size"], config["embedding_size"])
    got = file_keys(d)
    assert set(got) == set(want)
    assert {k: s for k, (s, _) in got.items()} == want
    assert (d / "tokenizer.json").exists() or (d / "tokenizer_config.json").exists()


def test_dream_checkpoint_has_exact_published_keys_with_gqa(ckpts):
    d = ckpts["dream"]
    config = json.loads((d / "config.json").read_text())
    assert DREAM_CONFIG_KEYS <= set(config), sorted(DREAM_CONFIG_KEYS - set(config))
    assert config["model_type"] == "Dream"
    assert config["num_key_value_heads"] == 2 < config["num_attention_heads"] == HEADS
    hd = config["hidden_size"] // config["num_attention_heads"]
    want = dream_expected_keys(config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"] * hd,
                               config["intermediate_size"], config["vocab_size"])
    got = file_keys(d)
    assert set(got) == set(want)
    assert {k: s for k, (s, _) in got.items()} == want


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_load_shapes_and_special_ids(ckpts, kind):
    m = dllm.load_model(ckpts[kind], device="cpu")
    assert isinstance(m, dllm.DiffusionLM)
    assert not m.training
    assert m.dtype == torch.float32  # CPU default
    assert m.vocab_size == V and m.num_layers == LAYERS and m.num_heads == HEADS and m.head_dim == D // HEADS
    assert m.num_kv_heads == (2 if kind == "dream" else HEADS)
    assert m.special.mask == 4 and m.special.eos == 2 and m.special.pad == 2
    assert m.logit_shift == (kind == "dream")  # docs/models.md#logit-shift: only Dream shifts
    assert m.tokenizer is not None
    logits = _logits(m, PROMPT.repeat(3, 1))
    assert logits.shape == (3, PROMPT.shape[1], V)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_loaded_equals_in_memory_and_save_reload_is_exact(ckpts, kind, tmp_path):
    seed = 11 if kind == "llada" else 12
    dims = {"kv_heads": 2} if kind == "dream" else {}
    in_memory = make_tiny_model(kind, seed=seed, **dims)
    loaded = dllm.load_model(ckpts[kind], device="cpu")
    assert torch.equal(_logits(in_memory), _logits(loaded))
    loaded.save_pretrained(tmp_path / "again")
    again = dllm.load_model(tmp_path / "again", device="cpu")
    assert torch.equal(_logits(loaded), _logits(again))
    assert set(file_keys(tmp_path / "again")) == set(file_keys(ckpts[kind]))


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_sharded_checkpoint_loads_identically(ckpts, kind, tmp_path):
    seed = 11 if kind == "llada" else 12
    dims = {"kv_heads": 2} if kind == "dream" else {}
    d = make_tiny_checkpoint(tmp_path / "sharded", kind, seed=seed, max_shard_bytes=50_000, **dims)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3
    assert all(re.fullmatch(rf"model-\d{{5}}-of-{len(shards):05d}\.safetensors", s) for s in shards)
    assert not (d / "model.safetensors").exists()
    assert set(index["weight_map"]) == set(file_keys(ckpts[kind]))
    assert file_keys(d) == file_keys(ckpts[kind])
    sharded = dllm.load_model(d, device="cpu")
    single = dllm.load_model(ckpts[kind], device="cpu")
    assert torch.equal(_logits(sharded), _logits(single))


@pytest.mark.parametrize("kind", ["llada", "dream"])
@pytest.mark.parametrize("dtype,name", [(torch.bfloat16, "bfloat16"), (torch.float16, "float16"), (torch.float32, "float32")])
def test_dtypes_store_and_load(kind, dtype, name, tmp_path):
    d = make_tiny_checkpoint(tmp_path / name, kind, seed=3, dtype=dtype)
    assert json.loads((d / "config.json").read_text())["torch_dtype"] == name
    assert {dt for _, dt in file_keys(d).values()} == {dtype}
    for requested in (dtype, name):
        m = dllm.load_model(d, device="cpu", dtype=requested)
        assert {p.dtype for p in m.parameters()} == {dtype}
        out = _logits(m)
        assert out.dtype == dtype  # logits stay in model dtype (docs/models.md#dtypes)
    ref = _logits(dllm.load_model(d, device="cpu", dtype=torch.float32))
    tol = {torch.bfloat16: 0.05, torch.float16: 5e-3, torch.float32: 0.0}[dtype]
    assert (out.float() - ref).abs().max().item() <= tol


# --- independent architecture cross-check against transformers --------------------------------------------

_LLAMA_BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj", "ff_norm": "post_attention_layernorm",
    "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj",
}


def llada_to_llama_name(key: str) -> str:
    fixed = {"model.transformer.wte.weight": "model.embed_tokens.weight", "model.transformer.ln_f.weight": "model.norm.weight",
             "model.transformer.ff_out.weight": "lm_head.weight"}
    if key in fixed:
        return fixed[key]
    m = re.fullmatch(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.weight", key)
    assert m, key
    return f"model.layers.{m.group(1)}.{_LLAMA_BLOCK_NAMES[m.group(2)]}.weight"


def _perturbed_checkpoint(kind: str, directory: Path) -> Path:
    """Random norms and biases too (the tiny init has unit norms and zero biases, which would hide mistakes)."""
    m = make_tiny_model(kind, seed=21, kv_heads=2)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_f" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.mul_(4.0)  # larger weights: sharper attention, logits far from 0
    m.save_pretrained(directory)
    return directory


def _hf_model(kind: str, directory: Path, dtype: torch.dtype):
    transformers = pytest.importorskip("transformers")
    cfg = json.loads((directory / "config.json").read_text())
    state = load_file(str(directory / "model.safetensors"))
    if kind == "dream":
        hf_cfg = transformers.Qwen2Config(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"], rms_norm_eps=cfg["rms_norm_eps"], rope_theta=cfg["rope_theta"],
            max_position_embeddings=cfg["max_position_embeddings"], tie_word_embeddings=False, use_sliding_window=False,
        )
        cls = transformers.Qwen2ForCausalLM
    else:
        hf_cfg = transformers.LlamaConfig(
            vocab_size=cfg["embedding_size"], hidden_size=cfg["d_model"], intermediate_size=cfg["mlp_hidden_size"],
            num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"], num_key_value_heads=cfg["n_kv_heads"],
            rms_norm_eps=cfg["rms_norm_eps"], rope_theta=cfg["rope_theta"], max_position_embeddings=cfg["max_sequence_length"],
            tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        )
        cls = transformers.LlamaForCausalLM
        state = {llada_to_llama_name(k): v for k, v in state.items()}
    hf_cfg._attn_implementation = "eager"  # plain matmul attention that adds whatever 4-D mask it is given
    model = cls(hf_cfg).eval()
    model.load_state_dict(state, strict=True)
    return model.to(dtype)


def _hf_logits(model, ids, bidirectional: bool):
    n = ids.shape[1]
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(ids.shape[0], 1, n, n, dtype=dtype) if bidirectional else None  # 4-D additive: attend everywhere
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("kind", ["llada", "dream"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_transformers_bidirectional(kind, dtype, tmp_path):
    d = _perturbed_checkpoint(kind, tmp_path / kind)
    ours = dllm.load_model(d, device="cpu", dtype=dtype)
    hf = _hf_model(kind, d, dtype)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (2, 19), generator=g)
    ids[:, 10:] = 4  # a masked tail as during decoding
    changed = ids.clone()
    changed[:, -1] = 7

    ref = _hf_logits(hf, ids, True)
    # The reference really is bidirectional: the first output moves when the last token changes ...
    assert (ref[:, 0] - _hf_logits(hf, changed, True)[:, 0]).abs().max() > 1e-3
    # ... which the default (causal) call would not show.
    causal = _hf_logits(hf, ids, False)
    assert torch.equal(causal[:, 0], _hf_logits(hf, changed, False)[:, 0])

    mine = _logits(ours, ids)
    assert mine.dtype == dtype
    scale = ref.abs().max().item()
    assert scale > 1.0
    # Both compute RMSNorm in float32 (docs/models.md#layers), so float64 agreement is at float32 level.
    assert (mine - ref).abs().max().item() <= 1e-5 * scale
    assert (mine - causal).abs().max().item() > 1e-2  # the comparison has power: causal attention is far off
    # and our model is bidirectional as well
    assert (mine[:, 0] - _logits(ours, changed)[:, 0]).abs().max() > 1e-3


# --- padded batches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_left_padded_row_matches_unpadded(kind):
    m = make_tiny_model(kind, seed=4, dtype=torch.float64, kv_heads=2)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" not in name and "ln_f" not in name:
                p.mul_(4.0)
    short = torch.tensor([1, 30, 31, 32, 4, 4, 4])
    long = torch.tensor([1, 50, 51, 52, 53, 54, 55, 4, 4, 4])
    pad = long.numel() - short.numel()
    ids = torch.stack([torch.cat([torch.full((pad,), 2), short]), long])
    key_mask = torch.ones_like(ids, dtype=torch.bool)
    key_mask[0, :pad] = False
    positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batch = m(ids, positions, key_mask)
        alone_short = m(short[None])[0]
        alone_long = m(long[None])[0]
        unmasked = m(ids, positions, None)
    assert (batch[0, pad:] - alone_short).abs().max().item() < 1e-9
    assert (batch[1] - alone_long).abs().max().item() < 1e-9
    assert (unmasked[0, pad:] - alone_short).abs().max().item() > 1e-4  # the key mask is what makes it work


# --- user errors ----------------------------------------------------------------------------------------

def _expect_error(path, *fragments, **kwargs) -> str:
    with pytest.raises(DllmError) as info:
        dllm.load_model(path, device="cpu", **kwargs)
    msg = str(info.value)
    assert msg and "\n" not in msg, repr(msg)
    for frag in fragments:
        assert frag.lower() in msg.lower(), (frag, msg)
    return msg


def _copy(ckpt: Path, dest: Path) -> Path:
    shutil.copytree(ckpt, dest)
    return dest


def test_error_missing_directory(tmp_path):
    _expect_error(tmp_path / "does" / "not" / "exist", "not found")


def test_error_file_instead_of_directory(ckpts):
    _expect_error(ckpts["llada"] / "config.json", "directory")


def test_error_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    _expect_error(tmp_path / "empty", "config.json")


def test_error_corrupt_config(ckpts, tmp_path):
    d = _copy(ckpts["llada"], tmp_path / "c")
    (d / "config.json").write_text('{"model_type": "llada", "d_model": ')
    _expect_error(d, "config.json")
    (d / "config.json").write_text("[1, 2, 3]")
    _expect_error(d, "config.json")


@pytest.mark.parametrize("keep", [0.5, 8])
def test_error_truncated_safetensors(ckpts, tmp_path, keep):
    d = _copy(ckpts["dream"], tmp_path / "t")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    _expect_error(d, "model.safetensors")


def test_error_missing_weights_file(ckpts, tmp_path):
    d = _copy(ckpts["llada"], tmp_path / "w")
    (d / "model.safetensors").unlink()
    _expect_error(d, "safetensors")


def test_error_missing_shard(tmp_path):
    d = make_tiny_checkpoint(tmp_path / "s", "llada", seed=1, max_shard_bytes=50_000)
    shards = sorted(p.name for p in d.glob("model-*.safetensors"))
    (d / shards[1]).unlink()
    _expect_error(d, shards[1])


def test_error_corrupt_shard_index(tmp_path):
    d = make_tiny_checkpoint(tmp_path / "i", "dream", seed=1, max_shard_bytes=50_000)
    (d / "model.safetensors.index.json").write_text('{"weight_map": ')
    _expect_error(d, "index")


def test_error_unknown_model_type(ckpts, tmp_path):
    d = _copy(ckpts["llada"], tmp_path / "u")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (d / "config.json").write_text(json.dumps(cfg))
    _expect_error(d, "gpt2", "llada", "dream")


@pytest.mark.parametrize("kind,key", [("llada", "model.transformer.ln_f.weight"),
                                      ("dream", "model.layers.1.self_attn.k_proj.bias")])
def test_error_missing_parameter(ckpts, tmp_path, kind, key):
    d = _copy(ckpts[kind], tmp_path / "m")
    state = load_file(str(d / "model.safetensors"))
    del state[key]
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    _expect_error(d, key)


def test_error_config_implies_more_layers_than_stored(ckpts, tmp_path):
    d = _copy(ckpts["llada"], tmp_path / "l")
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_layers"] = LAYERS + 1
    (d / "config.json").write_text(json.dumps(cfg))
    _expect_error(d, f"blocks.{LAYERS}.")


def _write_tokenizer_without_mask(d: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (d / f).unlink(missing_ok=True)
    vocab = {"<|unk|>": 0, "<|endoftext|>": 2, **{f"w{i}": i for i in range(5, V)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<|unk|>").save_pretrained(str(d))


def test_error_no_mask_token_anywhere(ckpts, tmp_path):
    d = _copy(ckpts["llada"], tmp_path / "nomask")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["mask_token_id"]
    (d / "config.json").write_text(json.dumps(cfg))
    # the shipped tokenizer still knows <|mdm_mask|>: the mask id comes from it
    assert dllm.load_model(d, device="cpu").special.mask == 4
    _write_tokenizer_without_mask(d)
    _expect_error(d, "mask")
    _expect_error(d, "mask", tokenizer=False)


def test_errors_are_value_errors():
    assert issubclass(DllmError, ValueError)
    assert tiny_config("llada")["model_type"] == "llada"
