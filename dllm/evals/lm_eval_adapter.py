"""lm-evaluation-harness model ``dllm``: any lm-eval generation task decoded with a dllm policy.

lm-eval only knows models registered in its own process, so run it through one of these entries (they register
``dllm`` and then hand every argument to lm-eval's CLI)::

    python -m dllm.evals.lm_eval_adapter --model dllm \\
        --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,policy=threshold,threshold=0.9,cache=prefix \\
        --tasks gsm8k --num_fewshot 5 --apply_chat_template --batch_size 1
    dllm lm-eval --model dllm --model_args pretrained=PATH,policy=threshold --tasks gsm8k
    torchrun --nproc-per-node 4 -m dllm.evals.lm_eval_adapter --model dllm ...   # data parallel

From Python, ``import dllm.evals.lm_eval_adapter`` registers the model, then ``lm_eval.simple_evaluate(model="dllm",
model_args=...)`` works.

model_args: ``pretrained`` (checkpoint dir or hub id), ``policy`` (default ``lowconf``), ``gen_length`` (default:
the task's ``max_gen_toks``, else 256), ``block_length`` (default 32 when it divides gen_length, else one block),
``steps`` (default gen_length), ``threshold``, ``cache``, ``block_schedule``, ``temperature``, ``seed``, ``device``,
``dtype``, ``batch_size``, ``add_bos_token`` (default: the tokenizer's own behaviour; never when the context already
starts with BOS, e.g. after ``--apply_chat_template``), ``escape_until`` (true: do not cut at the task's stop
sequences, as Dream's HumanEval runs); any other key (e.g. ``factor``, ``refresh``) is passed to ``dllm.generate``
as a policy/cache/schedule option. Only generation tasks work: ``loglikelihood`` raises NotImplementedError.

Needs the optional dependency: ``pip install 'dllm[lmeval]'``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dllm.errors import DllmError

try:
    from lm_eval.api.model import LM as _LMBase

    HAVE_LM_EVAL = True
except ImportError:  # pragma: no cover - depends on the environment
    _LMBase = object  # type: ignore[assignment,misc]
    HAVE_LM_EVAL = False

MODEL_NAME = "dllm"
_INSTALL_HINT = "lm-evaluation-harness is not installed; install it with: pip install lm-eval (the dllm 'lmeval' extra)"
_NOT_GENERATIVE = (
    "the dllm lm-eval model implements generate_until only: loglikelihood-based tasks (multiple choice, perplexity) "
    "are not supported for masked diffusion decoding; choose a generation task (e.g. gsm8k, humaneval)"
)


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise DllmError(f"expected true/false, got {value!r}")


def _int_or_none(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise DllmError(f"{name} must be an integer, got {value!r}") from None
    if v <= 0:
        raise DllmError(f"{name} must be positive, got {value!r}")
    return v


class DllmLM(_LMBase):  # type: ignore[misc,valid-type]
    """lm-eval ``LM`` that decodes with ``dllm.generate``."""

    def __init__(
        self,
        pretrained: str | None = None,
        policy: str = "lowconf",
        gen_length: int | None = None,
        block_length: int | None = None,
        steps: int | None = None,
        threshold: float | None = None,
        cache: str = "none",
        block_schedule: str = "fixed",
        temperature: float | None = None,
        seed: int = 0,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str | None = 1,
        max_batch_size: int | None = None,
        add_bos_token: bool | None = None,
        escape_until: bool = False,
        model: Any = None,
        **options: Any,
    ) -> None:
        if not HAVE_LM_EVAL:
            raise DllmError(_INSTALL_HINT)
        super().__init__()
        import dllm
        from dllm.options import option_table

        self.policy = str(policy)
        self.cache = str(cache)
        self.block_schedule = str(block_schedule)
        self.options = dict(options)
        if threshold is not None:
            self.options["threshold"] = float(threshold)
        names = set(option_table(self.policy, self.cache, self.block_schedule))
        unknown = sorted(set(self.options) - names)
        if unknown:
            raise DllmError(
                f"unknown model_args key {unknown[0]!r} for policy {self.policy!r}; known: pretrained, policy, "
                f"gen_length, block_length, steps, cache, block_schedule, temperature, seed, device, dtype, batch_size, "
                f"add_bos_token, escape_until, {', '.join(sorted(names))}"
            )
        self.gen_length = _int_or_none("gen_length", gen_length)
        self.block_length = _int_or_none("block_length", block_length)
        self.steps = _int_or_none("steps", steps)
        self.temperature = None if temperature is None else float(temperature)
        self.seed = int(seed)
        bs = 1 if batch_size in (None, "", "auto") or str(batch_size).startswith("auto") else int(batch_size)
        if bs < 1:
            raise DllmError(f"batch_size must be positive, got {batch_size!r}")
        self.batch_size = bs
        self.add_bos_token = _bool(add_bos_token)
        self.escape_until = bool(_bool(escape_until))

        import torch

        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI passes --device cuda:0 by default; on a machine without CUDA run on the CPU.
            import warnings

            warnings.warn(f"device {device!r} is not available (no CUDA); using cpu")
            device = "cpu"
        if world > 1:
            local = int(os.environ.get("LOCAL_RANK", "0") or 0)
            if device in (None, "auto") or str(device).startswith("cuda"):
                device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        if model is not None:  # an already loaded dllm model (tests, notebooks)
            self.model = model
        else:
            if not pretrained:
                raise DllmError("model_args needs pretrained=<checkpoint directory or hub id>")
            self.model = dllm.load_model(str(pretrained), device=device, dtype=dtype)
        if self.model.tokenizer is None:
            raise DllmError(f"model {pretrained!r} ships no tokenizer; lm-eval passes text")
        self._device = self.model.device
        self._rank, self._world_size = 0, 1
        if world > 1:
            from dllm.evals.distributed import init_distributed

            self._rank, self._world_size, _ = init_distributed(self._device.type)

    # -- lm-eval plumbing -----------------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or self.model.name_or_path).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if isinstance(chat_template, str):
            return chat_template
        return getattr(self.tokenizer, "chat_template", None) if chat_template else ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise DllmError(f"model {self.model.name_or_path!r} has no chat template; drop --apply_chat_template")
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def all_gather(self, tensor: Any) -> Any:
        if self._world_size <= 1:
            return tensor
        import torch
        import torch.distributed as dist

        t = tensor if tensor.dim() > 0 else tensor[None]
        parts = [torch.zeros_like(t) for _ in range(self._world_size)]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    def gather_object(self, obj: Any, dst: int = 0) -> Any:
        if self._world_size <= 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self._world_size if self._rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self._world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    # -- requests ---------------------------------------------------------------------------------------------------

    def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
        raise NotImplementedError(_NOT_GENERATIVE)

    def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> Any:
        raise NotImplementedError(_NOT_GENERATIVE)

    def _encode(self, context: str) -> list[int]:
        tok = self.tokenizer
        bos_text = getattr(tok, "bos_token", None)
        if bos_text and context.startswith(bos_text):
            ids = tok(context, add_special_tokens=False)["input_ids"]
        elif self.add_bos_token is None:
            ids = tok(context)["input_ids"]
        else:
            ids = tok(context, add_special_tokens=False)["input_ids"]
            bos = getattr(tok, "bos_token_id", None)
            if self.add_bos_token and bos is not None:
                ids = [bos] + list(ids)
        ids = list(ids)
        if not ids:  # lm-eval may send an empty context; give the model something to condition on
            bos = getattr(tok, "bos_token_id", None)
            ids = [bos if bos is not None else self.model.special.eos]
        return ids

    def _lengths(self, gen_kwargs: dict) -> tuple[int, int, int]:
        from dllm.api import default_block_length

        g = self.gen_length or _int_or_none("max_gen_toks", gen_kwargs.get("max_gen_toks")) or 256
        if self.block_length:
            b = self.block_length
            g = -(-g // b) * b  # whole blocks
        else:
            b = default_block_length(g)
        s = self.steps or g
        return g, b, s

    def generate_until(self, requests: Any, disable_tqdm: bool = False) -> list[str]:
        """Decode each context with the configured policy; cut the answer at the task's ``until`` strings."""
        from dllm.api import generate

        prepared = []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args[0], dict(req.args[1] or {})
            until = gen_kwargs.get("until") or []
            if isinstance(until, str):
                until = [until]
            prepared.append((i, context, gen_kwargs, list(until), self._lengths(gen_kwargs)))
        results: list[str | None] = [None] * len(prepared)
        # Same lengths in one batch; rows decode as they would alone, so grouping does not change answers.
        groups: dict[tuple, list] = {}
        for item in prepared:
            groups.setdefault(item[4], []).append(item)
        progress = None
        if not disable_tqdm and self._rank == 0:
            try:
                from tqdm import tqdm

                progress = tqdm(total=len(prepared), desc="dllm generate_until")
            except ImportError:  # pragma: no cover
                progress = None
        for (g, b, s), items in groups.items():
            for start in range(0, len(items), self.batch_size):
                chunk = items[start:start + self.batch_size]
                prompts = []
                for _, context, _, _, _ in chunk:
                    ids = self._encode(context)
                    room = self.model.max_length - g
                    if room <= 0:
                        raise DllmError(f"gen_length {g} does not fit the model's maximum length {self.model.max_length}")
                    prompts.append(ids[-room:])  # left-truncate overlong contexts, as lm-eval's HF model does
                out = generate(self.model, prompts, policy=self.policy, gen_length=g, block_length=b, steps=s,
                               cache=self.cache, block_schedule=self.block_schedule, temperature=self.temperature,
                               seed=self.seed, stop_at_eos=True, **self.options)
                texts = out.texts or [""] * len(chunk)
                for (i, context, gen_kwargs, until, _), text in zip(chunk, texts):
                    if not self.escape_until:
                        text = _cut(text, until)
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                if progress is not None:
                    progress.update(len(chunk))
        if progress is not None:
            progress.close()
        return [r if r is not None else "" for r in results]


def _cut(text: str, until: list[str]) -> str:
    cut = len(text)
    for s in until:
        if s:
            pos = text.find(s)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]


def register() -> None:
    """Register ``DllmLM`` as lm-eval model ``dllm`` (idempotent; lm-eval's own models stay available)."""
    if not HAVE_LM_EVAL:
        raise DllmError(_INSTALL_HINT)
    import lm_eval.models  # noqa: F401  - fills the registry with lm-eval's lazy entries first
    from lm_eval.api.registry import model_registry, register_model

    if model_registry.get(MODEL_NAME, None) is not DllmLM:
        register_model(MODEL_NAME)(DllmLM)


def main(argv: list[str] | None = None) -> None:
    """Register ``dllm`` and run lm-eval's command line with ``argv`` (default: this process's arguments)."""
    register()
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if HAVE_LM_EVAL and __name__ != "__main__":
    register()

if __name__ == "__main__":
    # Run through the importable module so the registered class is dllm.evals.lm_eval_adapter.DllmLM.
    from dllm.evals.lm_eval_adapter import main as _main

    try:
        _main(sys.argv[1:])
    except DllmError as _exc:
        print(f"error: {_exc}", file=sys.stderr)
        sys.exit(2)
