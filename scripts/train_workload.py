"""Train (or resume) the shipped workload model: ``dllm/assets/workload-llada``.

    python scripts/train_workload.py --out runs/workload-llada --time-limit 6600     # train / resume
    python scripts/train_workload.py --out runs/workload-llada --ship                # copy out/best into the package

Every ``WorkloadConfig`` field is a flag (``--hidden 192``, ``--fewshot-share 0.25``, ...); see
``dllm/training/workload.py`` for what each does and ``dllm/assets/README.md`` for the commands the shipped
checkpoint was made with. A run resumes from ``OUT/train_state.pt`` unless ``--no-resume``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from dllm.assets import ASSETS_DIR
from dllm.errors import DllmError
from dllm.training.workload import WorkloadConfig, train_workload

SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja", "train_config.json", "train_metrics.json")


def ship(run: Path, name: str = "workload-llada") -> Path:
    """Copy ``run/best`` (the checkpoint files only) into ``dllm/assets/<name>``."""
    best = run / "best"
    if not (best / "config.json").is_file():
        raise DllmError(f"{best} holds no checkpoint; train first")
    dest = ASSETS_DIR / name
    dest.mkdir(exist_ok=True)
    for f in SHIPPED_FILES:
        if (best / f).is_file():
            shutil.copy2(best / f, dest / f)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ship", action="store_true", help="copy OUT/best into dllm/assets/workload-llada and stop")
    ap.add_argument("--no-resume", action="store_true", help="start from scratch even if OUT/train_state.pt exists")
    for f in dataclasses.fields(WorkloadConfig):
        if f.name == "resume":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name in ("betas", "task_weights"):
            ap.add_argument(flag, type=json.loads, help=f"JSON, default {f.default_factory() if callable(f.default_factory) else f.default}")  # noqa: E501
        elif f.type in ("int", "float", "str"):
            ap.add_argument(flag, type={"int": int, "float": float, "str": str}[f.type], default=f.default)
        elif f.type == "bool":
            ap.add_argument(flag, type=lambda v: v.lower() in ("1", "true", "yes"), default=f.default)
        else:  # optional numbers / strings
            kind = float if "float" in f.type else int if "int" in f.type else str
            ap.add_argument(flag, type=kind, default=f.default)
    args = ap.parse_args(argv)
    try:
        if args.ship:
            print(f"shipped {ship(Path(args.out))}")
            return 0
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(WorkloadConfig)
                  if f.name != "resume" and getattr(args, f.name, None) is not None}
        cfg = WorkloadConfig(**values, resume=not args.no_resume)
        train_workload(cfg)
    except DllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
