"""Load real Hugging Face dLLM checkpoints (hub id or local directory) into the native implementations.

Reads ``config.json`` + single or sharded safetensors with the exact published parameter names, builds the
model on the meta device and assigns the weights directly (an 8B model never exists twice in memory), and
attaches the checkpoint's tokenizer and special ids. Every failure a user can cause is a one-line DllmError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from dllm.assets import is_shipped, shipped_models
from dllm.errors import DllmError
from dllm.models.base import MODELS, DiffusionLM, SpecialTokens

#: Published checkpoints this package knows (all load by hub id or from a local copy).
KNOWN_CHECKPOINTS: dict[str, str] = {
    "GSAI-ML/LLaDA-8B-Instruct": "llada",
    "GSAI-ML/LLaDA-8B-Base": "llada",
    "GSAI-ML/LLaDA-1.5": "llada",
    "Dream-org/Dream-v0-Instruct-7B": "dream",
    "Dream-org/Dream-v0-Base-7B": "dream",
}

DTYPES = {
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float64": torch.float64, "fp64": torch.float64,
}

_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.py"]
#: string forms of the mask/end-of-turn tokens in the published tokenizers
_MASK_STRINGS = ("<|mdm_mask|>", "<|mask|>", "[MASK]")
_EOT_STRINGS = ("<|eot_id|>", "<|im_end|>")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` means bfloat16 on CUDA (as the references run) and float32 on CPU."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise DllmError(f"unknown dtype {dtype!r}; choose one of: {', '.join(sorted(set(DTYPES)))}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DllmError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DllmError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def resolve_checkpoint(path_or_id: str | os.PathLike) -> Path:
    """A local directory as is; the name of a checkpoint shipped in the package (``tiny-llada``, ``tiny-dream``);
    otherwise a hub id downloaded (or found in the HF cache)."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    if path.exists():
        raise DllmError(f"checkpoint {text!r} is a file; pass the directory that holds config.json")
    shipped = shipped_models()
    if text in shipped:
        return shipped[text]
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise DllmError(f"checkpoint {text!r} not found: pass a local directory, a shipped model name "
                        f"({', '.join(shipped) or 'none installed'}) or a hub id like GSAI-ML/LLaDA-8B-Instruct")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=text, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # network, auth, missing repo: all the same to the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DllmError(f"cannot fetch checkpoint {text!r} from the hub ({first}); download it and pass the local directory") from None


def read_config(directory: Path) -> dict[str, Any]:
    file = directory / "config.json"
    if not file.is_file():
        raise DllmError(f"no config.json in {str(directory)!r}: not a model checkpoint directory")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DllmError(f"corrupt config.json in {str(directory)!r}: {exc}") from None
    if not isinstance(config, dict):
        raise DllmError(f"corrupt config.json in {str(directory)!r}: expected a JSON object")
    check_config_types(config, str(directory / "config.json"))
    return config


# --- config value types ---------------------------------------------------------------------------------------------
# What each kind expects of the config.json keys its implementation reads: "count" = positive integer, "int" =
# non-negative integer, "number" = int or float, "bool", "str"; a trailing "?" allows null. Keys that are absent are
# not checked here (the implementations apply their defaults); REQUIRED_CONFIG_KEYS lists those without a default.
_COMMON_CONFIG_TYPES = {"mask_token_id": "int?", "pad_token_id": "int?", "bos_token_id": "int?", "eos_token_id": "int-or-list?"}
_CONFIG_TYPES: dict[str, dict[str, str]] = {
    "llada": {
        "d_model": "count", "n_heads": "count", "n_kv_heads": "count?", "n_layers": "count", "mlp_hidden_size": "count?",
        "mlp_ratio": "number", "vocab_size": "count?", "embedding_size": "count?", "max_sequence_length": "count",
        "block_group_size": "count", "rope_theta": "number", "rms_norm_eps": "number", "rope": "bool", "alibi": "bool",
        "rope_full_precision": "bool", "include_bias": "bool", "bias_for_layer_norm": "bool?", "weight_tying": "bool",
        "scale_logits": "bool", "input_emb_norm": "bool", "attention_layer_norm": "bool",
        "multi_query_attention": "bool?", "block_type": "str", "layer_norm_type": "str", "activation_type": "str",
    },
    "dream": {
        "hidden_size": "count", "num_attention_heads": "count", "num_key_value_heads": "count?",
        "intermediate_size": "count", "num_hidden_layers": "count", "vocab_size": "count",
        "max_position_embeddings": "count", "rope_theta": "number", "rms_norm_eps": "number",
        "tie_word_embeddings": "bool", "hidden_act": "str",
    },
}
REQUIRED_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "llada": ("d_model", "n_heads", "n_layers"),
    "dream": ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers", "vocab_size"),
}
_TYPE_WORDS = {"count": "a positive integer", "int": "a non-negative integer", "number": "a number", "bool": "true or false",
               "str": "a string", "int-or-list": "a non-negative integer or a list of them"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _type_ok(kind: str, v: Any) -> bool:
    if kind == "count":
        return _is_int(v) and v > 0
    if kind == "int":
        return _is_int(v) and v >= 0
    if kind == "number":
        return (_is_int(v) or isinstance(v, float)) and v == v
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    return _type_ok("int", v) or (isinstance(v, list) and bool(v) and all(_type_ok("int", x) for x in v))


def check_config_types(config: dict[str, Any], where: str) -> None:
    """Every config value the implementations read has the type they need; otherwise one DllmError naming the
    key, the value and the expected type (instead of a ValueError from ``int("four")`` deep in a constructor).
    Unknown model types are left to :func:`model_class_for`."""
    model_type = str(config.get("model_type", "")).lower()
    for key in REQUIRED_CONFIG_KEYS.get(model_type, ()):
        if key not in config:
            raise DllmError(f"{where}: missing key {key!r} ({_TYPE_WORDS[_CONFIG_TYPES[model_type][key].rstrip('?')]}) "
                            f"that a {model_type} config needs")
    if model_type == "llada" and config.get("vocab_size") is None and config.get("embedding_size") is None:
        raise DllmError(f"{where}: a llada config needs vocab_size or embedding_size (a positive integer)")
    for key, kind in {**_COMMON_CONFIG_TYPES, **_CONFIG_TYPES.get(model_type, {})}.items():
        if key not in config:
            continue
        value = config[key]
        nullable = kind.endswith("?")
        kind = kind.rstrip("?")
        if (value is None and nullable) or (value is not None and _type_ok(kind, value)):
            continue
        expected = _TYPE_WORDS[kind] + (" or null" if nullable else "")
        raise DllmError(f"{where}: {key} is {json.dumps(value)}, expected {expected}")


def model_class_for(config: dict[str, Any], where: str) -> type[DiffusionLM]:
    model_type = str(config.get("model_type", "")).lower()
    if model_type not in MODELS:
        raise DllmError(
            f"unsupported model_type {config.get('model_type')!r} in {where!r}; supported: {', '.join(MODELS)}"
        )
    return MODELS.get(model_type).factory


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DllmError(f"corrupt model.safetensors.index.json in {str(directory)!r}: {exc}") from None
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DllmError(f"checkpoint {str(directory)!r} is missing shard(s): {', '.join(missing)}")
        return files
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    raise DllmError(f"no model.safetensors (or sharded index) in {str(directory)!r}")


def load_state_dict(directory: Path, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(directory):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():
                    state[key] = f.get_tensor(key).to(device=device, dtype=dtype)
        except DllmError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DllmError(f"corrupt checkpoint file {file.name!r} in {str(directory)!r}: {first}") from None
    return state


def _token_id(tokenizer: Any, strings: tuple[str, ...]) -> int | None:
    if tokenizer is None:
        return None
    vocab = tokenizer.get_vocab()
    for s in strings:
        if s in vocab:
            return int(vocab[s])
    return None


def load_tokenizer(directory: Path, trust_remote_code: bool = False) -> Any:
    """The checkpoint's tokenizer, or None when it ships none. Dream's remote-code tokenizer falls back to
    its fast ``tokenizer.json`` when remote code is not allowed."""
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    if not any((directory / n).is_file() for n in names):
        return None
    import warnings

    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    # AutoTokenizer peeks at config.json and warns about model types it does not know (ours); not news.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except Exception as exc:
        # Remote-code tokenizers (Dream's DreamTokenizer is a Qwen2 BPE) without trust_remote_code: build the
        # fast tokenizer from the files directly, with the special tokens of tokenizer_config.json.
        cfg = {}
        if (directory / "tokenizer_config.json").is_file():
            cfg = json.loads((directory / "tokenizer_config.json").read_text())
        specials = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "mask_token", "unk_token") if isinstance(cfg.get(k), str)}
        tok = None
        if (directory / "tokenizer.json").is_file():
            tok = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), **specials)
        elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            from transformers import Qwen2TokenizerFast

            tok = Qwen2TokenizerFast(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"), **specials)
        if tok is not None:
            if cfg.get("chat_template"):
                tok.chat_template = cfg["chat_template"]
            return tok
        raise DllmError(f"cannot load the tokenizer in {str(directory)!r}: {str(exc).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def special_tokens(config: dict[str, Any], tokenizer: Any, where: str) -> SpecialTokens:
    """Mask/EOS/PAD/EOT ids: the config wins (that is what the model was trained with), then the tokenizer."""
    mask = config.get("mask_token_id")
    if mask is None and tokenizer is not None:
        mask = getattr(tokenizer, "mask_token_id", None)
    if mask is None:
        mask = _token_id(tokenizer, _MASK_STRINGS)
    if mask is None:
        raise DllmError(f"checkpoint {where!r} has no mask token (config mask_token_id and tokenizer mask token are both missing)")
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise DllmError(f"checkpoint {where!r} has no eos token id")
    pad = config.get("pad_token_id")
    if pad is None and tokenizer is not None:
        pad = tokenizer.pad_token_id
    pad = eos if pad is None else pad
    if int(pad) == int(mask):
        raise DllmError(f"checkpoint {where!r}: pad token id equals the mask id {mask}; padding would be decoded")
    bos = config.get("bos_token_id")
    if bos is None and tokenizer is not None:
        bos = tokenizer.bos_token_id
    eot = _token_id(tokenizer, _EOT_STRINGS)
    return SpecialTokens(mask=int(mask), eos=int(eos), pad=int(pad), bos=None if bos is None else int(bos), eot=eot)


def load_model(
    path_or_id: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tokenizer: bool = True,
    trust_remote_code: bool = False,
) -> DiffusionLM:
    """Load a LLaDA or Dream checkpoint (hub id or directory) as a native ``DiffusionLM`` in eval mode.

    ``dtype`` defaults to bfloat16 on CUDA and float32 on CPU; ``device`` defaults to CUDA when available.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    directory = resolve_checkpoint(path_or_id)
    config = read_config(directory)
    cls = model_class_for(config, str(directory))
    with torch.device("meta"):
        model = cls(config)
    state = load_state_dict(directory, dev, torch_dtype)
    expected = set(model.state_dict().keys())
    missing = sorted(expected - state.keys())
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DllmError(f"checkpoint {str(directory)!r} does not match its config: missing {', '.join(missing[:3])}{more}")
    unexpected = sorted(k for k in state.keys() - expected if not k.endswith("rotary_emb.inv_freq"))
    if unexpected:
        more = f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise DllmError(f"checkpoint {str(directory)!r} has unexpected parameters: {', '.join(unexpected[:3])}{more}")
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in model.state_dict().items() if tuple(state[k].shape) != tuple(v.shape)]
    if shapes:
        k, got, want = shapes[0]
        raise DllmError(f"checkpoint {str(directory)!r} does not match its config: {k} has shape {got}, config implies {want}")
    model.load_state_dict({k: state[k] for k in expected}, assign=True)
    model.eval().requires_grad_(False)
    model.tokenizer = load_tokenizer(directory, trust_remote_code) if tokenizer else None
    model.special = special_tokens(config, model.tokenizer, str(directory))
    model.name_or_path = str(directory) if is_shipped(directory) else str(path_or_id)  # "tiny-llada" -> its path
    model.generation_defaults = read_generation_defaults(directory)
    return model


#: keys of generation_config.json's ``dllm`` entry that set a checkpoint's default decoding settings
GENERATION_DEFAULT_KEYS = ("gen_length", "block_length", "steps", "chat")


def read_generation_defaults(directory: Path) -> dict[str, Any]:
    """Decoding defaults a checkpoint ships in ``generation_config.json`` under ``"dllm"`` (e.g. the tiny
    synthetic models were trained with a 16-token answer region, so that is their gen_length)."""
    file = directory / "generation_config.json"
    if not file.is_file():
        return {}
    try:
        entry = json.loads(file.read_text()).get("dllm", {})
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {k: entry[k] for k in GENERATION_DEFAULT_KEYS if k in entry} if isinstance(entry, dict) else {}


def build_model(config: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.float32) -> DiffusionLM:
    """A randomly initialised model from a config dict (normal(0, 0.02) weights, unit norms, zero biases),
    for training from scratch and for tiny test checkpoints."""
    cls = model_class_for(config, "config")
    gen = torch.Generator().manual_seed(seed)
    model = cls(config)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("norm.weight") or "layernorm" in name or name.endswith("ln_f.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    model = model.to(dtype)
    model.special = special_tokens(config, None, "config")
    return model
