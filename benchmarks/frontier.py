"""Accuracy vs forwards of every decoding policy on a benchmark: each policy's knob swept, the one-token-per-step
baseline, ``turbo`` and the replay point; a table, a JSON report and a frontier plot.

Why: issue #13 asks for an accuracy-vs-NFE frontier per policy, with the replay (the fewest forwards that
reproduce the one-token-per-step output, ``dllm eval --replay``) marked, and for a policy or preset that takes at
least 25% fewer forwards than ``threshold`` 0.9 at most 0.5 points below its accuracy, on the GSM8K-format and the
HumanEval-format sets with the dual cache. ``--bench synthetic`` (the default) runs the shipped tiny model on the
synthetic suite (answer region of 16, one block, no cache by default); ``--bench gsm8k`` / ``--bench humaneval``
run the benchmark's own default model (the shipped ``workload-llada``), lengths (gen 256, block 32), chat setting
and data (the shipped workload test set), all resolved as ``dllm eval`` resolves them.

    OMP_NUM_THREADS=1 python benchmarks/frontier.py --png docs/frontier_synthetic.png   # 20 per family, all policies
    python benchmarks/frontier.py --limit 1 --policies threshold,freedave --png f.png --json f.json
    python benchmarks/frontier.py --bench gsm8k --cache dual --out runs/frontier-gsm8k       # issue #13, GSM8K set
    python benchmarks/frontier.py --bench humaneval --cache dual --out runs/frontier-humaneval  # and HumanEval set
    python benchmarks/frontier.py --bench gsm8k --cache dual --limit 2 --num-fewshot 0 --policies threshold

``--limit`` is examples per family on the synthetic suite (default 20) and examples on the other benchmarks
(default: the whole test set: 500 GSM8K-format problems, 200 HumanEval-format ones); ``--num-fewshot`` is
GSM8K's option of the same name (default 5). ``--device cuda`` for the full workload sets (CPU by default).

Every point is one ``dllm.evals.runner.evaluate`` run (records resumable under ``--out``); rows, AUP and the plot
come from ``dllm.evals.report`` (``plan_runs``, ``build_report``, ``plot_frontier``, whose x axis is tokens per
forward: generated tokens / NFE, so further right = fewer forwards). Accuracy is the benchmark's primary metric
(``Benchmark.primary_metric``: synthetic exact match, GSM8K flexible extract, HumanEval pass@1). This script adds
the knob per policy, marks each policy's default point, lays the legend outside the axes and summarises each
policy against ``threshold`` 0.9 *with the same cache* (:func:`summarize`; with ``--cache none,dual`` each cache
has its own reference, and a preset that brings its own cache is compared at the cache it runs with).

Knobs (``SWEEPS``): the option that trades accuracy for forwards, over a few values, the registry's default always
among them (read from the registry, never written here). Quota policies (``lowconf``, ``random`` and Dream's
three) sweep ``steps``: the step budgets that give 1, 2 or 4 tokens per step in every block (a divisor must divide
``block_length``, so each block gets a whole number of steps and tokens per step: 256, 128, 64 at gen 256 /
block 32; 16, 8, 4 on the synthetic suite), the budget default among them; ``lowconf`` at steps = gen_length with
no cache is the baseline row. ``learnedfilter``'s ``threshold`` defaults to the shipped filter's own (0.96);
``wino`` sweeps its wide-in ``threshold``, ``saber`` its fewest commits per step ``n``. Without ``--policies``
every registered policy and preset runs (those in ``SWEEPS`` first; an entry whose policy is not registered is
skipped); one missing from ``SWEEPS`` runs at its defaults as one point.

**Quirk**: no warm-up call before each point (``dllm eval`` makes one): the frontier reads NFE and TPF only, so the
wall times in the JSON include one-time initialisation.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from dllm.errors import DllmError

#: the default benchmark, whose ``--limit`` counts examples per family
BENCH = "synthetic"
#: the knob of quota policies: the step budget (a length, not a policy option)
STEPS = "steps"
#: policy -> (knob, values); values of ``steps`` are tokens per step (divisors of block_length; 1 = one per step)
SWEEPS: dict[str, tuple[str | None, tuple[Any, ...]]] = {
    "lowconf": (STEPS, (1, 2, 4)),
    "random": (STEPS, (1, 2, 4)),
    "maskgit_plus": (STEPS, (1, 2, 4)),
    "topk_margin": (STEPS, (1, 2, 4)),
    "entropy": (STEPS, (1, 2, 4)),
    "threshold": ("threshold", (0.5, 0.7, 0.8, 0.9, 0.95)),
    "factor": ("factor", (0.5, 1.0, 2.0, 4.0)),
    "creditdecoding": ("threshold", (0.5, 0.7, 0.8, 0.9, 0.95)),
    "earlycommit": ("early_commit_thresholds", ("15,10,5", "7.5,5,2.5", "5,2.5,1", "2.5,1,0.5")),
    "learnedfilter": ("threshold", (0.5, 0.8, 0.9, 0.96)),
    "ebsampler": ("gamma", (0.01, 0.1, 0.3, 0.5, 1.0)),
    "localleap": ("threshold", (0.8, 0.9, 0.95)),
    "klass": ("conf_threshold", (0.7, 0.8, 0.9, 0.95)),
    "freedave": ("draft_steps", (2, 4, 8)),
    "wino": ("threshold", (0.5, 0.6, 0.7, 0.8, 0.9)),
    "saber": ("n", (1, 2, 4)),
    "turbo": (None, ()),
}
#: extra groups of a policy with some options fixed, each with its own knob: policy -> [(fixed options, knob,
#: values)]; they are never the policy's default setting (FreeDave++: freedave reproducing threshold decoding)
VARIANTS: dict[str, list[tuple[dict[str, Any], str, tuple[Any, ...]]]] = {
    "freedave": [({"base": "threshold"}, "threshold", (0.7, 0.9, 0.95))],
}
#: the issue's reference point and target: >= TARGET fewer forwards than threshold 0.9 at <= TOLERANCE points lower
REFERENCE_POLICY = "threshold"
TOLERANCE_POINTS = 0.5
TARGET_FEWER = 0.25


@dataclass
class Point:
    """One planned run and where it sits in its policy's sweep."""

    run: Any  # dllm.evals.report._Run
    knob: str | None
    value: Any
    default: bool


def _default(policy: str, knob: str, steps: int) -> Any:
    """The value a policy uses when the knob is not given (normalised as the registry validates it); ``steps`` is
    the benchmark's step budget."""
    from dllm.samplers.registry import POLICIES

    if knob == STEPS:
        return steps
    value = POLICIES.get(policy).validate({})[knob]
    if value is None and policy == "learnedfilter" and knob == "threshold":  # None = the filter's own threshold
        from dllm.samplers.learned import default_filter_path, load_filter_cached

        value = load_filter_cached(default_filter_path()).threshold
    return value


def _same(policy: str, knob: str, a: Any, b: Any) -> bool:
    """Whether two knob values mean the same setting (``"7.5,5,2.5"`` == ``(7.5, 5.0, 2.5)``)."""
    if knob == STEPS or a is None or b is None:
        return a == b
    from dllm.samplers.registry import POLICIES

    entry = POLICIES.get(policy)
    return entry.validate({knob: a})[knob] == entry.validate({knob: b})[knob]


def plan(policies: Sequence[str], caches: Sequence[str], lengths: Any) -> list[Point]:
    """The baseline, each policy's sweep per cache (its default value added when missing), then one replay per
    cache; lengths assigned (quota sweeps get their own step budgets: gen_length / k for each k of the sweep that
    divides block_length, so every block decodes k tokens per step). Runs share ``dllm eval``'s planner."""
    from dllm.evals.report import BASELINE_POLICY, assign_lengths, plan_runs
    from dllm.evals.settings import Lengths

    g, b = lengths.gen_length, lengths.block_length
    points = [Point(r, STEPS, g, True) for r in plan_runs([], {}, "none", "fixed", None, True, None)]
    for policy in policies:
        knob, values = SWEEPS.get(policy, (None, ()))
        if knob is None:
            points += [Point(r, None, None, True) for r in plan_runs([policy], {}, list(caches), "fixed", None,
                                                                       False, None)]
            continue
        default = _default(policy, knob, lengths.steps)
        if knob == STEPS:
            values = tuple(dict.fromkeys(g // k for k in values if b % k == 0))
        if not any(_same(policy, knob, v, default) for v in values):
            values = (*values, default)
        if knob == STEPS:
            for base in plan_runs([policy], {}, list(caches), "fixed", None, False, None):
                for v in values:
                    run = copy.copy(base)
                    run.swept, run.lengths = True, Lengths(g, b, v)
                    points.append(Point(run, knob, v, v == default))
        else:
            for run in plan_runs([policy], {}, list(caches), "fixed", None, False, (knob, list(values))):
                v = run.options[knob]
                points.append(Point(run, knob, v, _same(policy, knob, v, default)))
        for fixed, vknob, vvalues in VARIANTS.get(policy, []):
            for run in plan_runs([policy], dict(fixed), list(caches), "fixed", None, False, (vknob, list(vvalues))):
                points.append(Point(run, vknob, run.options[vknob], False))
    points += [Point(r, None, None, False) for r in plan_runs([], {}, list(caches), "fixed", None, False, None,
                                                              replay=True)]
    steps_of = {id(p.run): p.run.lengths for p in points if p.knob == STEPS and not p.run.baseline}
    assign_lengths([p.run for p in points], lengths)  # baseline and replays one token per step, the rest `lengths`
    for p in points:
        if id(p.run) in steps_of:
            p.run.lengths = steps_of[id(p.run)]
    assert points[0].run.policy == BASELINE_POLICY
    return points


def _unique(points: list[Point]) -> list[Point]:
    """One point per record tag (lowconf at steps = gen_length is the baseline), as ``dllm eval`` does."""
    from dllm.evals import runner

    seen: dict[str, Point] = {}
    for p in points:
        r = p.run
        seen.setdefault(runner.policy_tag(runner.REPLAY if r.replay else r.policy, r.options, r.cache, r.schedule,
                                          r.lengths), p)
    return list(seen.values())


def group_of(row: dict) -> str:
    """The summary group of a report row: its policy group, the baseline in ``lowconf``'s, a replay on its own."""
    from dllm.evals.report import BASELINE_POLICY

    if row.get("replay"):
        return row["label"]
    return BASELINE_POLICY if row["baseline"] else row["group"]


def cache_of(row: dict) -> str:
    """The cache a report row decoded with: ``effective_cache`` where :func:`main` set it (a preset run with
    ``--cache none`` keeps its own cache), else the row's ``cache``."""
    return row.get("effective_cache") or row["cache"]


def summarize(rows: Sequence[dict], primary: str = "correct", tolerance: float = TOLERANCE_POINTS,
              target: float = TARGET_FEWER) -> list[dict]:
    """Per group (in row order): its default point and its fewest-forwards point among those with accuracy >=
    the reference's minus ``tolerance`` points, that point's share of forwards saved against the reference
    (1 - NFE / reference NFE) and whether it reaches ``target``. The reference is ``threshold``'s default point
    with the same cache (:func:`cache_of`: a dual-cache point is never measured against a no-cache reference);
    without one, the comparison fields are None. Ties on NFE go to the more accurate point, then to the default
    setting, then to the earlier row."""
    refs: dict[str, dict] = {}
    for r in rows:
        if r["policy"] == REFERENCE_POLICY and r.get("default") and not r.get("replay"):
            refs.setdefault(cache_of(r), r)
    out = []
    for group in dict.fromkeys(group_of(r) for r in rows):
        pts = [r for r in rows if group_of(r) == group]
        caches = {cache_of(r) for r in pts}
        if len(caches) > 1:  # groups are per cache (plan_runs); a mixed group would compare across caches
            raise DllmError(f"summary group {group!r} mixes caches {', '.join(sorted(caches))}")
        cache = cache_of(pts[0])
        ref = refs.get(cache)
        entry: dict[str, Any] = {
            "group": group, "policy": pts[0]["policy"], "cache": cache, "replay": bool(pts[0].get("replay")),
            "points": len(pts), "default": next((_brief(r, primary) for r in pts if r.get("default")), None),
            "reference": _brief(ref, primary) if ref else None, "best": None, "fewer_forwards": None,
            "meets_target": None,
        }
        if ref is not None:
            floor = 100 * ref["accuracy"][primary] - tolerance
            ok = [r for r in pts if 100 * r["accuracy"][primary] >= floor - 1e-9]
            if ok:
                best = min(ok, key=lambda r: (r["mean_nfe"], -r["accuracy"][primary], not r.get("default")))
                fewer = 1 - best["mean_nfe"] / ref["mean_nfe"]
                entry.update(best=_brief(best, primary), fewer_forwards=fewer, meets_target=fewer >= target - 1e-12)
            else:
                entry["meets_target"] = False
        out.append(entry)
    return out


def _brief(row: dict, primary: str) -> dict:
    return {"label": row["label"], "setting": _setting(row), "accuracy": row["accuracy"][primary],
            "mean_nfe": row["mean_nfe"], "tpf": row["tpf"]}


def _setting(row: dict) -> str:
    if row.get("replay"):
        return "-"
    if row.get("knob") is None:
        return "defaults"
    return f"{row['knob']}={row['value']}" + (" (baseline)" if row["baseline"] else "")


def format_tables(report: dict, summary: list[dict]) -> str:
    """Markdown: every point (accuracy, NFE, TPF, default marked), then one summary line per policy."""
    from dllm.evals.report import format_number as _num

    primary = report["primary_metric"]
    lines = ["| policy | setting | acc % | NFE | TPF |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        name = "replay (1 tok/step output, fewest forwards)" if r.get("replay") else group_of(r)
        setting = _setting(r) + (" (default)" if r.get("default") else "")
        if r.get("replay"):
            setting = f"cache={r['cache']}, {r.get('fallbacks', 0)} fallback forwards"
        lines.append(f"| {name} | {setting} | {100 * r['accuracy'][primary]:.1f} | {r['mean_nfe']:.2f} | "
                     f"{_num(r['tpf'], '{:.2f}')} |")
    lines += ["", f"| policy | default: acc % / NFE | fewest NFE at acc >= ref - {TOLERANCE_POINTS:g} pt | setting | "
                  f"NFE / {REFERENCE_POLICY} 0.9's | <= {1 - TARGET_FEWER:.2f}? | AUP |",
              "|---|---|---|---|---|---|---|"]
    for s in summary:
        d, b = s["default"], s["best"]
        head = f"{100 * d['accuracy']:.1f} / {d['mean_nfe']:.2f}" if d else "-"
        best = f"{b['mean_nfe']:.2f} ({100 * b['accuracy']:.1f}%)" if b else "-"
        meets = ("-" if s["meets_target"] is None else "not a policy" if s["replay"]
                 else "reference" if s["policy"] == REFERENCE_POLICY  # not a candidate (see verdict)
                 else "yes" if s["meets_target"] else "no")
        aup = (report.get("aup") or {}).get(s["group"])
        lines.append(f"| {s['group']} | {head} | {best} | {b['setting'] if b else '-'} | "
                     f"{_num(None if s['fewer_forwards'] is None else 1 - s['fewer_forwards'], '{:.2f}')} | {meets} "
                     f"| {_num(aup, '{:.2f}')} |")
    return "\n".join(lines)


def verdict(summary: list[dict]) -> str:
    """One sentence per cache with a reference: which policies meet the target against threshold 0.9 with that
    cache (the no-cache sentence names no cache, as on the synthetic suite)."""
    refs = {s["cache"]: s["reference"] for s in summary if s["reference"]}
    if not refs:
        return f"no {REFERENCE_POLICY} 0.9 point in this run: no comparison"
    parts = []
    for cache, ref in refs.items():
        hits = [s["group"] for s in summary if s["cache"] == cache and s["meets_target"] and not s["replay"]
                and s["policy"] != REFERENCE_POLICY]
        where = "" if cache == "none" else f" with cache {cache}"
        head = (f"target (>= {100 * TARGET_FEWER:.0f}% fewer forwards than {REFERENCE_POLICY} 0.9{where}, "
                f"{ref['mean_nfe']:.2f} NFE at {100 * ref['accuracy']:.1f}%, within {TOLERANCE_POINTS:g} points): ")
        parts.append(head + (f"met by {', '.join(hits)}" if hits else "met by no policy"))
    return "; ".join(parts)


def plot(report: dict, path: str, title: str) -> None:
    """``plot_frontier`` (accuracy vs TPF, baseline star, replay diamonds) with each policy's default point ringed,
    the legend outside the axes and the figure kept small."""
    import matplotlib

    from dllm.evals.report import plot_frontier

    fig = plot_frontier({**report, "sweep_key": None}, path)  # knobs differ per policy: no value labels
    ax = fig.axes[0]
    colors = matplotlib.colormaps["tab20"].colors
    for k, line in enumerate(ax.get_lines()):  # one per policy group; more groups than the default 10 colours
        line.set_color(colors[(2 * k) % 20 + (2 * k) // 20 % 2])
        line.set_marker("osv^DPXp<>h"[k % 11])
        line.set_markersize(5)
    primary = report["primary_metric"]
    marked = [r for r in report["rows"] if r.get("default") and not r["baseline"] and r["tpf"] is not None]
    ax.scatter([r["tpf"] for r in marked], [100 * r["accuracy"][primary] for r in marked], s=150,
               facecolors="none", edgecolors="0.35", linewidths=0.9, zorder=2, label="default setting (ringed)")
    ax.get_legend().remove()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, fontsize=9)
    fig.set_size_inches(9.0, 4.8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default=BENCH,
                        help="benchmark: synthetic (default), gsm8k, humaneval or another registered one")
    parser.add_argument("--model", default=None,
                        help="checkpoint directory (default: the benchmark's shipped model: tiny-llada for "
                             "synthetic, workload-llada for gsm8k and humaneval)")
    parser.add_argument("--data", default=None,
                        help="data file (gsm8k JSONL, humaneval .jsonl[.gz]; default: the shipped workload test set "
                             "for a shipped model, as dllm eval)")
    parser.add_argument("--limit", type=int, default=None,
                        help="synthetic: test examples per family (6 families; default 20); other benchmarks: the "
                             "first N examples (default: all)")
    parser.add_argument("--num-fewshot", type=int, default=None, help="GSM8K few-shot examples (default 5)")
    parser.add_argument("--policies", default=None,
                        help="comma-separated policies/presets (default: every registered one, those in SWEEPS "
                             "first); the baseline and the replay always run")
    parser.add_argument("--cache", default="none", help="comma-separated caches, each run with every policy")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument("--out", default="runs/frontier", help="records and summaries (reruns resume from them)")
    parser.add_argument("--json", default=None, help="report + summary JSON (default: OUT/frontier.json)")
    parser.add_argument("--png", default=None, help="frontier plot (default: OUT/frontier.png)")
    args = parser.parse_args(argv)
    command = "python benchmarks/frontier.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None
                                                                                         else sys.argv[1:]))
    try:
        import dllm
        from dllm.assets import is_shipped
        from dllm.cli.common import default_model_path
        from dllm.evals import runner
        from dllm.evals.bench import get_benchmark
        from dllm.evals.report import build_report
        from dllm.options import resolve_preset
        from dllm.samplers.registry import POLICIES, PRESETS

        bench = args.bench
        bench_obj, bench_entry = get_benchmark(bench)
        given = {} if args.num_fewshot is None else {"num_fewshot": args.num_fewshot}
        if given and "num_fewshot" not in bench_entry.option_names():
            raise DllmError(f"--num-fewshot applies to benchmarks with few-shot prompts, not {bench!r}")
        bench_options = bench_entry.validate(given, fill_defaults=False)
        registered = POLICIES.names() + PRESETS.names()
        policies = ([*(n for n in SWEEPS if n in registered), *(n for n in registered if n not in SWEEPS)]
                    if args.policies is None else [p.strip() for p in args.policies.split(",")])
        for p in policies:
            if p not in POLICIES and p not in PRESETS:
                raise DllmError(f"unknown policy {p!r}; choose from {', '.join(registered)}")
        per_family = bench == BENCH
        limit = (20 if per_family else None) if args.limit is None else args.limit
        if limit is not None and limit < 1:
            raise DllmError(f"--limit must be a positive integer, got {limit}")
        if args.data is not None and not Path(args.data).exists():
            raise DllmError(f"--data {args.data!r} does not exist")
        caches = [c.strip() for c in args.cache.split(",")]
        torch.set_num_threads(args.threads)
        warnings.simplefilter("ignore", RuntimeWarning)
        # the model, lengths, chat setting and data as `dllm eval` resolves them for this benchmark
        model = dllm.load_model(args.model or default_model_path(bench_obj.default_model), device=args.device)
        lengths = runner.resolve_lengths(model, bench)
        chat = bench_obj.default_chat(model)
        points = _unique(plan(policies, caches, lengths))
        for p in points:
            runner.check_run(p.run.policy, p.run.options, p.run.cache, p.run.schedule, p.run.lengths)
        samples = runner.load_samples(model, bench, limit=limit, data=args.data, chat=chat, **bench_options)
        summaries = []
        for i, p in enumerate(points):
            r = p.run
            print(f"[{i + 1}/{len(points)}] {r.label}" + (f" steps={r.lengths.steps}" if p.knob == STEPS else ""),
                  file=sys.stderr, flush=True)
            summaries.append(runner.evaluate(
                model, bench, r.policy, r.options, cache=r.cache, block_schedule=r.schedule,
                gen_length=r.lengths.gen_length, block_length=r.lengths.block_length, steps=r.lengths.steps,
                batch_size=args.batch_size, continuous=False, out_dir=args.out, data=args.data, chat=chat,
                samples=samples, progress=False, warmup=False, replay=r.replay, **bench_options))
    except DllmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    name = Path(model.name_or_path).name or str(model.name_or_path)
    report = build_report(bench, name, [p.run for p in points], summaries, "knob (per policy)")
    for p, row in zip(points, report["rows"]):
        row.update(knob=p.knob, value=p.value, default=p.default,
                   effective_cache=resolve_preset(p.run.policy, p.run.cache, p.run.schedule)[1])
        if p.knob == STEPS and not p.run.baseline:
            row["label"] += f" steps={p.value}"
    primary = report["primary_metric"]
    summary = summarize(report["rows"], primary)
    n = report["rows"][0]["n"]
    if per_family:
        header = (f"{bench} suite, {name}, n = {n} ({limit} per family), gen = block = {lengths.gen_length}, "
                  f"cache {args.cache}, {args.threads} thread(s); 1 sample = {100 / n:.2f} points")
        title = f"{bench} suite, {name}, n={n}: accuracy vs tokens per forward (right = fewer forwards)"
    else:
        metric = next((h for h, key in bench_obj.columns if key == primary), primary)
        data = args.data or ("shipped test set" if is_shipped(model.name_or_path) else "default data")
        shots = bench_entry.validate(bench_options).get("num_fewshot")
        header = (f"{bench} ({data}{'' if shots is None else f', {shots}-shot'}), {name}, n = {n}, accuracy = "
                  f"{metric}, gen {lengths.gen_length} / block {lengths.block_length}, chat {'on' if chat else 'off'}, "
                  f"cache {args.cache}, {args.device}, {args.threads} thread(s); 1 sample = {100 / n:.2f} points")
        title = f"{bench}, {name}, n={n}, {metric}: accuracy vs tokens per forward (right = fewer forwards)"
    text = format_tables(report, summary)
    print(header)
    print(text)
    print(verdict(summary))
    json_path = Path(args.json or Path(args.out) / "frontier.json")
    png = args.png or str(Path(args.out) / "frontier.png")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**report, "command": command, ("n_per_family" if per_family else "limit"): limit, "header": header,
           "summary": summary, "verdict": verdict(summary), "tolerance_points": TOLERANCE_POINTS,
           "target_fewer": TARGET_FEWER, "chat": chat, "bench_options": bench_entry.validate(bench_options),
           "lengths": {"gen_length": lengths.gen_length, "block_length": lengths.block_length,
                       "steps": lengths.steps}}
    json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    plot(report, png, title)
    print(f"json: {json_path}\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
