"""Does continuous batching decode the same tokens as static batches on this device? One JSON answer.

Why: continuous batching is the default on CUDA (``dllm.api.default_continuous``) on the promise that every prompt
decodes as it would alone, so results do not depend on it. The tests pin that on a CPU in float32. On a GPU two
things could break it: a bf16 matmul may round differently with the number of rows in the call (a prompt shares
its forwards with other rows under the two modes), and without a cache a forward skips the leading columns that
are padding in all its rows (``CacheManager.full_forward``), so the same prompt runs through calls of different
widths. This script decodes the same prompts both ways on the device and says whether anything differs.

Cells: the shipped tiny LLaDA with every cache (``none``, ``prefix``, ``dual``, ``delayed``) and the tiny Dream
with ``none`` and ``dual``, each in bfloat16 (the CUDA default) and float32; ``threshold`` 0.9, the synthetic
test split with families interleaved (rows finish after different numbers of forwards, so slots are refilled
mid-call), gen_length 16 in blocks of 4 (the KV caches refresh and reuse across blocks), ``stop_at_eos`` on.
Per cell: static vs continuous tokens and ``seq_nfe`` per prompt, static run twice (a difference there is
run-to-run nondeterminism, not batching), then a second pass compares every prompt with its decode alone. The
JSON is rewritten after each cell, so a time limit keeps what finished (``complete`` is true once every
comparison ran; ``identical`` covers the finished ones).

    python scripts/check_continuous.py --out continuous.json              # on the GPU (cuda when available)
    OMP_NUM_THREADS=1 python scripts/check_continuous.py --quick --out /tmp/c.json   # CPU smoke run

Exit status: 0 when every finished comparison is identical, 1 when any differs, 2 on a user error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

#: model -> caches checked (Dream has no prefix/delayed path worth the time here; its dual path is the one it ships)
CELLS = {"tiny-llada": ("none", "prefix", "dual", "delayed"), "tiny-dream": ("none", "dual")}
DTYPES = ("bfloat16", "float32")
SHOWN = 10  #: differing prompt indices listed per cell


def interleaved_prompts(model: Any, n_per_family: int) -> list[list[int]]:
    """Synthetic test prompts, one family after another within each index (copy-0, reverse-0, ..., copy-1, ...)."""
    import dllm
    from dllm.evals.synthetic import interleave_families, load_split

    grouped = [dllm.encode_prompt(model, ex.prompt, chat=False) for ex in load_split("test", n_per_family=n_per_family)]
    return interleave_families(grouped, n_per_family)


def differing(a: Any, b: Any) -> list[int]:
    """Prompt indices whose tokens or ``seq_nfe`` differ between two outputs of the same prompts."""
    return [i for i in range(a.tokens.shape[0])
            if not torch.equal(a.tokens[i], b.tokens[i]) or a.seq_nfe[i] != b.seq_nfe[i]]


def compare(model: Any, prompts: list[list[int]], batch_size: int, **kw: Any) -> dict[str, Any]:
    """Static (twice) and continuous batches of the same prompts: which prompts differ, and the forwards."""
    import dllm

    static = dllm.generate(model, prompts, batch_size=batch_size, continuous=False, **kw)
    again = dllm.generate(model, prompts, batch_size=batch_size, continuous=False, **kw)
    cont = dllm.generate(model, prompts, batch_size=batch_size, continuous=True, **kw)
    diff, noise = differing(static, cont), differing(static, again)
    return {"prompts": len(prompts), "batch_size": batch_size, "static_forwards": static.nfe,
            "continuous_forwards": cont.nfe, "ragged": len(set(static.seq_nfe)) > 1,
            "identical": not diff, "differing": len(diff), "differing_prompts": diff[:SHOWN],
            "static_repeat_identical": not noise, "_continuous": cont}


def compare_alone(model: Any, prompts: list[list[int]], cont: Any, **kw: Any) -> list[int]:
    """Prompt indices whose continuous decode differs from the same prompt decoded alone."""
    import dllm

    out = []
    for i, p in enumerate(prompts):
        one = dllm.generate(model, [p], **kw)
        if not torch.equal(one.tokens[0], cont.tokens[i]) or one.seq_nfe[0] != cont.seq_nfe[i]:
            out.append(i)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write (rewritten after each cell)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--n-per-family", type=int, default=None, help="synthetic prompts per family (default 8; quick 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 16; quick 4")
    parser.add_argument("--no-alone", action="store_true", help="skip the second pass (each prompt alone)")
    parser.add_argument("--quick", action="store_true", help="few prompts: a CPU smoke run")
    args = parser.parse_args(argv)
    import dllm
    from dllm.errors import DllmError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    n = args.n_per_family or (2 if args.quick else 8)
    batch = args.batch_size or (4 if args.quick else 16)
    kw = dict(policy="threshold", threshold=0.9, gen_length=16, block_length=4, steps=16)
    meta = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu", "torch": torch.__version__,
            "settings": {**kw, "n_per_family": n, "batch_size": batch, "stop_at_eos": True}}
    result: dict[str, Any] = {"meta": meta, "cells": [], "identical": None, "complete": False}
    out_path = Path(args.out)

    def write() -> None:
        cells = result["cells"]
        verdicts = [c["identical"] for c in cells] + [c["alone_identical"] for c in cells if "alone_identical" in c]
        result["identical"] = all(verdicts) if verdicts else None
        public = [{k: v for k, v in c.items() if not k.startswith("_")} for c in cells]
        out_path.write_text(json.dumps({**result, "cells": public}, indent=1) + "\n")

    try:
        loaded = {}
        for name, caches in CELLS.items():
            for dtype in DTYPES:
                model = dllm.load_model(name, device=device, dtype=dtype)
                prompts = interleaved_prompts(model, n)
                loaded[name, dtype] = (model, prompts)
                for cache in caches:
                    t0 = time.perf_counter()
                    cell = {"model": name, "dtype": dtype, "cache": cache,
                            **compare(model, prompts, batch, cache=cache, **kw)}
                    cell["seconds"] = round(time.perf_counter() - t0, 2)
                    result["cells"].append(cell)
                    write()
                    print(f"{name} {dtype} cache {cache}: continuous vs static "
                          + ("identical" if cell["identical"] else f"DIFFERENT in {cell['differing']} of {len(prompts)} prompts")
                          + f" (forwards {cell['continuous_forwards']} vs {cell['static_forwards']}"
                          + ("" if cell["static_repeat_identical"] else "; static differs run to run") + ")", flush=True)
        if not args.no_alone:
            for cell in result["cells"]:
                model, prompts = loaded[cell["model"], cell["dtype"]]
                diff = compare_alone(model, prompts, cell["_continuous"], cache=cell["cache"], **kw)
                cell["alone_identical"], cell["alone_differing_prompts"] = not diff, diff[:SHOWN]
                write()
                print(f"{cell['model']} {cell['dtype']} cache {cell['cache']}: continuous vs each prompt alone "
                      + ("identical" if not diff else f"DIFFERENT in {len(diff)} of {len(prompts)} prompts"), flush=True)
    except DllmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["complete"] = True
    write()
    print(f"continuous batching on {meta['device']}: "
          + {True: "identical to static batches in every cell", False: "DIFFERS (see the cells)",
             None: "nothing compared"}[result["identical"]] + f" -> {out_path}")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
