"""A scripted ``DiffusionLM`` for exact policy tests (reusable by any test module).

``ScriptedLM`` returns logits chosen by a Python function of the row's prompt, the number of forwards that
row has taken part in, and the row's current generated tokens. Rows are recognised by their prompt (left
padding and the key mask are stripped), so a row gets exactly the same logits whether it runs alone or in a
ragged batch: batch == single comparisons then test the engine and the policies, not the model.

Import it as ``from fake_model import ScriptedLM`` (pytest puts ``tests/`` on ``sys.path``). It supports
``cache="none"`` only (it has no attention layers). Helpers build logits with exact
probabilities (``dist``, ``peaked``) or an exact top-1/top-2 logit gap (``gap``).

    model = ScriptedLM(vocab_size=16, gen_length=4, script=lambda prompt, call, gen: ...)  # -> [G, V]
    model = ScriptedLM.from_steps(vocab_size=16, steps=[tensor [G, V], ...])               # same for every prompt
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from dllm.models.base import DiffusionLM, SpecialTokens

#: Default special ids: pad 0, bos 1, eos 2, mask 3 (as the char tokenizer); ordinary tokens from 5.
PAD, BOS, EOS, MASK = 0, 1, 2, 3
NEG = -1.0e4  # "probability 0" in fp32 (exp underflows to exactly 0)

Script = Callable[[tuple, int, Tensor], Tensor]


def dist(vocab_size: int, probs: dict[int, float], rest: float | None = None) -> Tensor:
    """[V] logits whose softmax gives exactly ``probs`` (other tokens share ``1 - sum`` or get 0)."""
    total = sum(probs.values())
    out = torch.full((vocab_size,), NEG)
    others = [t for t in range(vocab_size) if t not in probs]
    left = 1.0 - total if rest is None else rest
    if left > 1e-12 and others:
        out[others] = math.log(left / len(others))
    for t, p in probs.items():
        out[t] = math.log(p) if p > 0 else NEG
    return out


def peaked(vocab_size: int, token: int, prob: float) -> Tensor:
    """[V] logits: ``token`` has probability ``prob``, the rest is spread uniformly."""
    return dist(vocab_size, {token: prob})


def gap(vocab_size: int, token: int, value: float) -> Tensor:
    """[V] logits with top-1 ``token`` exactly ``value`` above every other logit (all 0)."""
    out = torch.zeros(vocab_size)
    out[token] = value
    return out


class ScriptedLM(DiffusionLM):
    kind = "scripted"
    logit_shift = False

    def __init__(self, vocab_size: int = 16, gen_length: int = 8, script: Script | None = None,
                 max_length: int = 512, special: SpecialTokens | None = None, tokenizer=None) -> None:
        super().__init__({"vocab_size": vocab_size})
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.num_layers, self.num_heads, self.num_kv_heads, self.head_dim = 1, 1, 1, 1
        self.gen_length = gen_length
        self.script = script or (lambda prompt, call, gen: torch.zeros(gen.shape[0], vocab_size))
        self.special = special or SpecialTokens(mask=MASK, eos=EOS, pad=PAD, bos=BOS)
        self.tokenizer = tokenizer
        self._anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.calls: Counter = Counter()
        self.forwards = 0

    @classmethod
    def from_steps(cls, vocab_size: int, steps: Sequence[Tensor], **kw) -> "ScriptedLM":
        """Every row sees ``steps[k]`` ([G, V]) on its k-th forward (the last one repeats)."""
        steps = [torch.as_tensor(s, dtype=torch.float32) for s in steps]
        return cls(vocab_size, steps[0].shape[0], lambda prompt, call, gen: steps[min(call, len(steps) - 1)], **kw)

    def reset(self) -> None:
        self.calls.clear()
        self.forwards = 0

    def forward(self, input_ids: Tensor, position_ids: Tensor | None = None, key_mask: Tensor | None = None,
                kv_hook=None, logits_index: Tensor | slice | None = None) -> Tensor:
        if kv_hook is not None:
            raise NotImplementedError("ScriptedLM supports cache='none' only")
        self.forwards += 1
        r, t = input_ids.shape
        g = self.gen_length
        out = torch.zeros(r, t, self.vocab_size)
        for i in range(r):
            row = input_ids[i] if key_mask is None else input_ids[i][key_mask[i]]
            prompt = tuple(row[:-g].tolist())
            gen = row[-g:].clone()
            call = self.calls[prompt]
            self.calls[prompt] += 1
            logits = torch.as_tensor(self.script(prompt, call, gen), dtype=torch.float32)
            assert logits.shape == (g, self.vocab_size), f"script returned {tuple(logits.shape)}, want {(g, self.vocab_size)}"
            out[i, t - g:] = logits
        if logits_index is not None:
            out = out[:, logits_index] if isinstance(logits_index, slice) else torch.gather(
                out, 1, logits_index[..., None].expand(-1, -1, out.shape[-1]))
        return out

    # unused by the engine with cache="none", present for completeness
    def embed(self, input_ids: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def layers(self) -> list[nn.Module]:  # pragma: no cover
        return []

    def head(self, h: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def content_script(vocab_size: int, seed: int = 0, sharpness: float = 4.0, eos_after: int | None = None) -> Script:
    """A deterministic 'model': logits are a pseudo-random function of (prompt, generated tokens so far),
    so rows depend only on their own content. ``eos_after=k`` makes positions >= k lean towards EOS."""

    def script(prompt: tuple, call: int, gen: Tensor) -> Tensor:
        key = hash((seed, prompt, tuple(gen.tolist()))) & 0x7FFFFFFF
        g = torch.Generator().manual_seed(key)
        logits = torch.randn(gen.shape[0], vocab_size, generator=g) * sharpness
        logits[:, MASK] = NEG
        if eos_after is not None:
            logits[eos_after:, EOS] += 2.5 * sharpness
        return logits

    return script


def run_scripted(model: "ScriptedLM", policy: str, prompts: list[list[int]], **kw):
    """Decode ``prompts`` with ``policy`` on a scripted model from its first step (gen and block length default to
    the script's, ``stop_at_eos`` off, traced). Returns (output, commit step per position as nested lists)."""
    import dllm

    model.reset()
    kw.setdefault("gen_length", model.gen_length)
    kw.setdefault("block_length", model.gen_length)
    kw.setdefault("stop_at_eos", False)
    out = dllm.generate(model, prompts, policy=policy, trace=True, **kw)
    return out, out.trace.commit_step().tolist()


def load_repo_script(relative: str, name: str):
    """Import a script of this repository that is not a package module (``benchmarks/*.py``, ``scripts/*.py``)
    under ``name``; registered in ``sys.modules`` first, as dataclasses look their module up there."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
