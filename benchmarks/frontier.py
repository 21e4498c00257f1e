"""Accuracy vs forwards of every decoding policy on the synthetic suite: each policy's knob swept, the
one-token-per-step baseline, ``turbo`` and the replay point; a table, a JSON report and a frontier plot.

Why: issue #13 asks for an accuracy-vs-NFE frontier per policy, with the replay (the fewest forwards that
reproduce the one-token-per-step output, ``dllm eval --replay``) marked, and for a policy that takes at least 25%
fewer forwards than ``threshold`` 0.9 at most 0.5 points below its accuracy. That target is set on
GSM8K/HumanEval-format prompts with the dual cache, which need the workload model that is still training; this
script measures what can be measured now: the shipped tiny model on the synthetic suite (answer region of 16,
one block, no cache by default).

    OMP_NUM_THREADS=1 python benchmarks/frontier.py --png docs/frontier_synthetic.png   # 20 per family, all policies
    python benchmarks/frontier.py --limit 1 --policies threshold,freedave --png f.png --json f.json

Every point is one ``dllm.evals.runner.evaluate`` run (records resumable under ``--out``); rows, AUP and the plot
come from ``dllm.evals.report`` (``plan_runs``, ``build_report``, ``plot_frontier``, whose x axis is tokens per
forward: generated tokens / NFE, so further right = fewer forwards). This script adds the knob per policy, marks
each policy's default point, lays the legend outside the axes and summarises each policy against
``threshold`` 0.9 (:func:`summarize`).

Knobs (``SWEEPS``): the option that trades accuracy for forwards, over a few values, the registry's default always
among them. Quota policies (``lowconf``, ``random`` and Dream's three) sweep ``steps`` (default gen_length);
``lowconf`` at steps = gen_length is the baseline row. ``learnedfilter``'s ``threshold`` defaults to the shipped
filter's own (0.96). A registered policy or preset missing from ``SWEEPS`` runs at its defaults as one point.
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

BENCH = "synthetic"
#: the knob of quota policies: the step budget (a length, not a policy option)
STEPS = "steps"
#: policy -> (knob, values); values of ``steps`` are divisors of gen_length as fractions (1 = one token per step)
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
    "turbo": (None, ()),
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


def _default(policy: str, knob: str, gen_length: int) -> Any:
    """The value a policy uses when the knob is not given (normalised as the registry validates it)."""
    from dllm.samplers.registry import POLICIES

    if knob == STEPS:
        return gen_length
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
    cache; lengths assigned (quota sweeps get their own step budgets). Runs share ``dllm eval``'s planner."""
    from dllm.evals.report import BASELINE_POLICY, assign_lengths, plan_runs
    from dllm.evals.settings import Lengths

    g = lengths.gen_length
    points = [Point(r, STEPS, g, True) for r in plan_runs([], {}, "none", "fixed", None, True, None)]
    for policy in policies:
        knob, values = SWEEPS.get(policy, (None, ()))
        if knob is None:
            points += [Point(r, None, None, True) for r in plan_runs([policy], {}, list(caches), "fixed", None,
                                                                       False, None)]
            continue
        default = _default(policy, knob, g)
        if knob == STEPS:
            values = tuple(dict.fromkeys(g // k for k in values if g % k == 0))
        if not any(_same(policy, knob, v, default) for v in values):
            values = (*values, default)
        if knob == STEPS:
            for base in plan_runs([policy], {}, list(caches), "fixed", None, False, None):
                for v in values:
                    run = copy.copy(base)
                    run.swept, run.lengths = True, Lengths(g, lengths.block_length, v)
                    points.append(Point(run, knob, v, v == default))
        else:
            for run in plan_runs([policy], {}, list(caches), "fixed", None, False, (knob, list(values))):
                v = run.options[knob]
                points.append(Point(run, knob, v, _same(policy, knob, v, default)))
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


def summarize(rows: Sequence[dict], primary: str = "correct", tolerance: float = TOLERANCE_POINTS,
              target: float = TARGET_FEWER) -> list[dict]:
    """Per group (in row order): its default point and its fewest-forwards point among those with accuracy >=
    the reference's minus ``tolerance`` points, that point's share of forwards saved against the reference
    (1 - NFE / reference NFE) and whether it reaches ``target``. The reference is ``threshold``'s default point
    with the same cache; without one, the comparison fields are None. Ties on NFE go to the more accurate point,
    then to the default setting, then to the earlier row."""
    refs = {r["cache"]: r for r in rows if r["policy"] == REFERENCE_POLICY and r.get("default") and not r.get("replay")}
    out = []
    for group in dict.fromkeys(group_of(r) for r in rows):
        pts = [r for r in rows if group_of(r) == group]
        ref = refs.get(pts[0]["cache"])
        entry: dict[str, Any] = {
            "group": group, "policy": pts[0]["policy"], "cache": pts[0]["cache"], "replay": bool(pts[0].get("replay")),
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


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else fmt.format(x)


def format_tables(report: dict, summary: list[dict]) -> str:
    """Markdown: every point (accuracy, NFE, TPF, default marked), then one summary line per policy."""
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
                 else "yes" if s["meets_target"] else "no")
        aup = (report.get("aup") or {}).get(s["group"])
        lines.append(f"| {s['group']} | {head} | {best} | {b['setting'] if b else '-'} | "
                     f"{_num(None if s['fewer_forwards'] is None else 1 - s['fewer_forwards'], '{:.2f}')} | {meets} "
                     f"| {_num(aup, '{:.2f}')} |")
    return "\n".join(lines)


def verdict(summary: list[dict]) -> str:
    """One sentence: which policies meet the target against threshold 0.9 on this run."""
    hits = [s["group"] for s in summary if s["meets_target"] and not s["replay"] and s["policy"] != REFERENCE_POLICY]
    ref = next((s["reference"] for s in summary if s["reference"]), None)
    if ref is None:
        return f"no {REFERENCE_POLICY} 0.9 point in this run: no comparison"
    head = (f"target (>= {100 * TARGET_FEWER:.0f}% fewer forwards than {REFERENCE_POLICY} 0.9, {ref['mean_nfe']:.2f} "
            f"NFE at {100 * ref['accuracy']:.1f}%, within {TOLERANCE_POINTS:g} points): ")
    return head + (f"met by {', '.join(hits)}" if hits else "met by no policy")


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
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the shipped tiny-llada)")
    parser.add_argument("--limit", type=int, default=20, help="test examples per family (6 families)")
    parser.add_argument("--policies", default=None,
                        help="comma-separated policies/presets (default: every one in SWEEPS); the baseline and "
                             "the replay always run")
    parser.add_argument("--cache", default="none", help="comma-separated caches, each run with every policy")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/frontier", help="records and summaries (reruns resume from them)")
    parser.add_argument("--json", default=None, help="report + summary JSON (default: OUT/frontier.json)")
    parser.add_argument("--png", default=None, help="frontier plot (default: OUT/frontier.png)")
    args = parser.parse_args(argv)
    command = "python benchmarks/frontier.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None
                                                                                         else sys.argv[1:]))
    try:
        import dllm
        from dllm.assets import DEFAULT_MODEL
        from dllm.evals import runner
        from dllm.evals.report import build_report
        from dllm.samplers.registry import POLICIES, PRESETS

        policies = list(SWEEPS) if args.policies is None else [p.strip() for p in args.policies.split(",")]
        for p in policies:
            if p not in POLICIES and p not in PRESETS:
                raise DllmError(f"unknown policy {p!r}; choose from {', '.join(POLICIES.names() + PRESETS.names())}")
        if args.limit < 1:
            raise DllmError(f"--limit must be a positive integer, got {args.limit}")
        caches = [c.strip() for c in args.cache.split(",")]
        torch.set_num_threads(args.threads)
        warnings.simplefilter("ignore", RuntimeWarning)
        model = dllm.load_model(args.model or DEFAULT_MODEL, device="cpu", dtype="float32")
        lengths = runner.resolve_lengths(model, BENCH)
        points = _unique(plan(policies, caches, lengths))
        for p in points:
            runner.check_run(p.run.policy, p.run.options, p.run.cache, p.run.schedule, p.run.lengths)
        samples = runner.load_samples(model, BENCH, limit=args.limit)
        summaries = []
        for i, p in enumerate(points):
            r = p.run
            print(f"[{i + 1}/{len(points)}] {r.label}" + (f" steps={r.lengths.steps}" if p.knob == STEPS else ""),
                  file=sys.stderr, flush=True)
            summaries.append(runner.evaluate(
                model, BENCH, r.policy, r.options, cache=r.cache, block_schedule=r.schedule,
                gen_length=r.lengths.gen_length, block_length=r.lengths.block_length, steps=r.lengths.steps,
                batch_size=args.batch_size, continuous=False, out_dir=args.out, samples=samples, progress=False,
                replay=r.replay))
    except DllmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    name = Path(model.name_or_path).name or str(model.name_or_path)
    report = build_report(BENCH, name, [p.run for p in points], summaries, "knob (per policy)")
    for p, row in zip(points, report["rows"]):
        row.update(knob=p.knob, value=p.value, default=p.default)
        if p.knob == STEPS and not p.run.baseline:
            row["label"] += f" steps={p.value}"
    summary = summarize(report["rows"], report["primary_metric"])
    n = report["rows"][0]["n"]
    header = (f"{BENCH} suite, {name}, n = {n} ({args.limit} per family), gen = block = {lengths.gen_length}, "
              f"cache {args.cache}, {args.threads} thread(s); 1 sample = {100 / n:.2f} points")
    text = format_tables(report, summary)
    print(header)
    print(text)
    print(verdict(summary))
    json_path = Path(args.json or Path(args.out) / "frontier.json")
    png = args.png or str(Path(args.out) / "frontier.png")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**report, "command": command, "n_per_family": args.limit, "header": header, "summary": summary,
           "verdict": verdict(summary), "tolerance_points": TOLERANCE_POINTS, "target_fewer": TARGET_FEWER}
    json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    plot(report, png, f"{BENCH} suite, {name}, n={n}: accuracy vs tokens per forward (right = fewer forwards)")
    print(f"json: {json_path}\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
