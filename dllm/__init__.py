"""dllm: fast parallel decoding for masked diffusion language models.

    import dllm
    model = dllm.load_model("GSAI-ML/LLaDA-8B-Instruct")     # or a local directory, or "tiny-llada" (shipped)
    out = dllm.generate(model, ids, policy="threshold", gen_length=256, block_length=32, threshold=0.9)
    out.tokens, out.nfe, out.trace
"""

from dllm.api import block_schedules, caches, decoding_lengths, default_block_length, encode_prompt, generate
from dllm.engine import GenerationOutput, Trace, TraceStep
from dllm.errors import DllmError
from dllm.models import DiffusionLM, load_model
from dllm.samplers.base import Decision, Policy, PolicyState, Proposal, StepContext
from dllm.samplers.registry import make_policy, policies

__version__ = "0.1.0"

__all__ = [
    "load_model", "generate", "policies", "caches", "block_schedules", "make_policy", "default_block_length",
    "decoding_lengths", "encode_prompt",
    "GenerationOutput", "Trace", "TraceStep", "DllmError", "DiffusionLM", "Policy", "PolicyState", "StepContext",
    "Decision", "Proposal", "__version__",
]
