"""Native LLaDA and Dream models behind one interface (``DiffusionLM``)."""

from dllm.models.base import MODELS, DiffusionLM, KVHook, SpecialTokens
from dllm.models.dream import DREAM_7B_CONFIG, DreamModel
from dllm.models.llada import LLADA_8B_CONFIG, LLaDAModel
from dllm.models.loading import KNOWN_CHECKPOINTS, build_model, load_model

__all__ = [
    "DiffusionLM", "KVHook", "SpecialTokens", "LLaDAModel", "DreamModel", "LLADA_8B_CONFIG", "DREAM_7B_CONFIG",
    "KNOWN_CHECKPOINTS", "MODELS", "build_model", "load_model",
]
