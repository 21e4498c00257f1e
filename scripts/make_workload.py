"""Write the workload files shipped in dllm/assets/workload/ (test splits, GSM8K few-shot pool, tokenizer).

    python scripts/make_workload.py                       # regenerate the shipped files (seed 0)
    python scripts/make_workload.py --check               # exit 1 if the shipped files differ from a regeneration
    python scripts/make_workload.py --train-out DIR --n-gsm8k 100000 --n-humaneval 20000 [--seed 0]
                                                          # also write the train splits (never shipped)
    python scripts/make_workload.py --stats               # token-length statistics with the shipped tokenizer

Everything is a pure function of the seed (``random.Random`` only): the train split for seed S is
``gsm8k_problems("train", n, S)`` / ``humaneval_problems("train", n, S)``, prefix-stable in n.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from dllm.evals import generators as wl
from dllm.evals import gsm8k
from dllm.training.subword import build_workload_tokenizer


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def write_shipped(out: Path, seed: int) -> list[Path]:
    """The shipped files under ``out``; returns their paths."""
    files = {
        out / wl.GSM8K_TEST.name: wl.gsm8k_problems("test", wl.GSM8K_TEST_SIZE, seed),
        out / wl.GSM8K_FEWSHOT.name: wl.gsm8k_problems("train", wl.GSM8K_FEWSHOT_SIZE, seed),
        out / wl.HUMANEVAL_TEST.name: wl.humaneval_problems("test", wl.HUMANEVAL_TEST_SIZE, seed),
    }
    for path, records in files.items():
        write_jsonl(path, records)
    tok_dir = out / wl.TOKENIZER_DIR.name
    build_workload_tokenizer(tok_dir, seed=seed)
    # tokenizer.json + tokenizer_config.json, and chat_template.jinja where transformers (5.x) writes one
    return list(files) + sorted(p for p in tok_dir.iterdir() if p.is_file())


def check(seed: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_shipped(Path(tmp), seed)
        bad = [p.relative_to(tmp) for p in fresh
               if not filecmp.cmp(p, wl.WORKLOAD_DIR / p.relative_to(tmp), shallow=False)]
    if bad:
        print("differ from a regeneration: " + ", ".join(map(str, bad)), file=sys.stderr)
        return 1
    print("shipped workload files match a regeneration with seed", seed)
    return 0


def _describe(name: str, lengths: list[int]) -> str:
    lengths = sorted(lengths)
    p95 = lengths[int(0.95 * (len(lengths) - 1))]
    return f"{name:44s} mean {statistics.mean(lengths):7.1f}  p95 {p95:5d}  max {lengths[-1]:5d}  (n={len(lengths)})"


def stats() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(wl.TOKENIZER_DIR))

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    test = gsm8k.load_gsm8k(wl.GSM8K_TEST)
    pool = gsm8k.load_fewshot_pool(fewshot_path=wl.GSM8K_FEWSHOT)
    humaneval = [json.loads(line) for line in open(wl.HUMANEVAL_TEST, encoding="utf-8")]
    print(f"tokenizer: {len(tok)} tokens")
    print(_describe("gsm8k-format answer (+EOS)", [n_tokens(d["answer"]) + 1 for d in test]))
    print(_describe("gsm8k-format prompt, 0-shot", [n_tokens(gsm8k.build_prompt(d)) for d in test]))
    print(_describe("gsm8k-format prompt, 5-shot",
                    [n_tokens(gsm8k.build_prompt(d, gsm8k.select_fewshot(d, pool, 5))) for d in test]))
    print(_describe("gsm8k-format prompt, 5-shot, chat template",
                    [n_tokens(gsm8k.build_prompt(d, gsm8k.select_fewshot(d, pool, 5), tok, chat=True))
                     for d in test]))
    print(_describe("humaneval-format prompt", [n_tokens(p["prompt"]) for p in humaneval]))
    print(_describe("humaneval-format body (+EOS)", [n_tokens(p["canonical_solution"]) + 1 for p in humaneval]))
    print(_describe("humaneval-format full function in a fence (+EOS)",
                    [n_tokens("```python\n" + p["prompt"] + p["canonical_solution"] + "```") + 1 for p in humaneval]))
    dep = [p for p, m in zip(humaneval, wl.humaneval_problems("test", len(humaneval), wl.SEED, with_meta=True))
           if m["meta"]["family"].startswith("dependency/")]
    print(_describe("humaneval-format dependency body (+EOS)", [n_tokens(p["canonical_solution"]) + 1 for p in dep]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=wl.SEED)
    ap.add_argument("--out", type=Path, default=wl.WORKLOAD_DIR, help="where the shipped files go")
    ap.add_argument("--check", action="store_true", help="compare the shipped files with a regeneration")
    ap.add_argument("--stats", action="store_true", help="token-length statistics of the shipped files")
    ap.add_argument("--train-out", type=Path, help="also write the train splits (JSONL) into this directory")
    ap.add_argument("--n-gsm8k", type=int, default=50_000)
    ap.add_argument("--n-humaneval", type=int, default=10_000)
    args = ap.parse_args(argv)
    if args.check:
        return check(args.seed)
    if args.stats:
        stats()
        return 0
    for path in write_shipped(args.out, args.seed):
        print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
    if args.train_out is not None:
        for name, records in (
            ("gsm8k_format_train.jsonl", wl.gsm8k_problems("train", args.n_gsm8k, args.seed)),
            ("humaneval_format_train.jsonl", wl.humaneval_problems("train", args.n_humaneval, args.seed)),
        ):
            write_jsonl(args.train_out / name, records)
            print(f"wrote {args.train_out / name} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
