"""Checkpoints shipped inside the package, so ``dllm generate`` and the tests work on a fresh machine.

``tiny-llada`` (the default model) and ``tiny-dream`` are small masked-diffusion models trained on the
synthetic suite (``dllm.evals.synthetic``) with ``dllm train-tiny``; ``workload-llada`` is the LLaDA-format model
of the GSM8K-/HumanEval-format workload (``scripts/train_workload.py``; an interim, undertrained checkpoint for
now). See ``README.md`` beside this file.
"""

from __future__ import annotations

from pathlib import Path

from dllm.errors import DllmError

ASSETS_DIR: Path = Path(__file__).resolve().parent
SHIPPED: tuple[str, ...] = ("tiny-llada", "tiny-dream", "workload-llada")


def asset_path(name: str) -> Path:
    """Directory of the shipped checkpoint ``name`` (one of ``SHIPPED``)."""
    path = ASSETS_DIR / name
    if name not in SHIPPED or not (path / "config.json").is_file():
        available = [n for n in SHIPPED if (ASSETS_DIR / n / "config.json").is_file()]
        raise DllmError(f"no shipped checkpoint {name!r}; available: {', '.join(available) or 'none'}")
    return path


DEFAULT_MODEL: Path = ASSETS_DIR / "tiny-llada"
"""The model ``dllm generate`` uses when no ``--model`` is given."""


def shipped_models() -> dict[str, Path]:
    """Name -> directory of every shipped checkpoint present in this installation."""
    return {name: ASSETS_DIR / name for name in SHIPPED if (ASSETS_DIR / name / "config.json").is_file()}


def is_shipped(path: object) -> bool:
    """Whether ``path`` (e.g. a model's ``name_or_path``) is a checkpoint shipped in this package."""
    try:
        p = Path(str(path)).resolve()
    except (OSError, RuntimeError):
        return False
    return p.parent == ASSETS_DIR and p.name in SHIPPED
