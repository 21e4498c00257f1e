"""The comparison report of one ``dllm eval`` call: the planned runs (baseline first, each policy, each sweep
value), rows with speedups against the baseline, AUP per swept policy, the table and the frontier plot.

Bench-specific columns come from the benchmark plug-in (``Benchmark.columns`` / ``extra_columns``).

Replay rows (``dllm eval --replay``, one per cache x block schedule, flagged ``"replay": true``): the fewest
forwards that reproduce ``lowconf``'s one-token-per-step output with that cache (``dllm.evals.runner``). They
need that output first, so they are a reference point for NFE, not a decoding method: they have no wall-clock
columns or intervals, take no part in the timing rounds or AUP's y_max, and the plot marks them apart.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from dllm.errors import DllmError
from dllm.evals.bench import get_benchmark
from dllm.evals.settings import Lengths
from dllm.options import option_table

#: the one-token-per-step baseline every report compares against
BASELINE_POLICY = "lowconf"
#: legend label of the replay rows on the frontier plot
REPLAY_LABEL = "replay (1 tok/step output, fewest forwards)"
_REPLAY_COLORS = ("black", "tab:red", "tab:purple", "tab:brown", "tab:gray")


class _Run:
    def __init__(self, policy: str, options: dict[str, Any], cache: str, schedule: str, lengths: Any,
                 baseline: bool = False, group: str = "", swept: bool = False, replay: bool = False) -> None:
        self.policy, self.options, self.cache, self.schedule, self.lengths = policy, options, cache, schedule, lengths
        self.baseline, self.group, self.swept, self.replay = baseline, group, swept, replay

    @property
    def label(self) -> str:
        if self.replay:  # the cache always named: a replay is only meaningful with its cache
            return " ".join(["replay", f"cache={self.cache}"] + [f"{k}={v}" for k, v in sorted(self.options.items())]
                            + ([f"schedule={self.schedule}"] if self.schedule != "fixed" else []))
        parts = [self.policy]
        parts += [f"{k}={v}" for k, v in sorted(self.options.items())]
        if self.cache != "none":
            parts.append(f"cache={self.cache}")
        if self.schedule != "fixed":
            parts.append(f"schedule={self.schedule}")
        if self.baseline:
            parts.append("(baseline)")
        return " ".join(parts)


def plan_runs(policies: list[str], options: dict[str, Any], cache: str | Sequence[str],
              schedule: str | Sequence[str], lengths: Lengths | None, baseline: bool,
              sweep: tuple[str, list[Any]] | None, replay: bool = False) -> list[_Run]:
    """The runs of one ``dllm eval`` call: the baseline, then each cache x schedule x policy (each sweep value),
    then with ``replay`` one replay run per cache x schedule (``lowconf`` with the cache's and schedule's options).
    Every run gets the options its policy, cache and schedule accept; an option no run accepts is an error."""
    caches = [cache] if isinstance(cache, str) else list(cache)
    schedules = [schedule] if isinstance(schedule, str) else list(schedule)
    runs: list[_Run] = []
    if baseline:
        runs.append(_Run(BASELINE_POLICY, {}, "none", "fixed", None, baseline=True))
    used: set[str] = set()
    swept_any = False
    for c in caches:
        for s in schedules:
            for policy in policies:
                names = set(option_table(policy, c, s))
                mine = {k: v for k, v in options.items() if k in names}
                used |= set(mine)
                group = " ".join([policy] + [f"{k}={v}" for k, v in sorted(mine.items()) if not sweep or k != sweep[0]]
                                 + ([f"cache={c}"] if c != "none" else []) + ([f"schedule={s}"] if s != "fixed" else []))
                if sweep and sweep[0] in names:
                    swept_any = True
                    for value in sweep[1]:
                        runs.append(_Run(policy, {**mine, sweep[0]: value}, c, s, lengths, group=group, swept=True))
                else:
                    runs.append(_Run(policy, mine, c, s, lengths, group=group))
    if replay:
        for c in caches:
            for s in schedules:
                names = {k for k, (piece, _) in option_table(BASELINE_POLICY, c, s).items() if piece != "policy"}
                mine = {k: v for k, v in options.items() if k in names}
                runs.append(_Run(BASELINE_POLICY, mine, c, s, lengths, replay=True))
    unused = sorted(set(options) - used)
    if unused:
        raise DllmError(
            f"option {unused[0]!r} is accepted by none of the policies {', '.join(policies)} with cache "
            f"{', '.join(caches)} and schedule {', '.join(schedules)}"
        )
    if sweep and not swept_any:
        raise DllmError(f"--sweep {sweep[0]!r} is an option of none of the policies {', '.join(policies)}")
    return assign_lengths(runs, lengths) if lengths is not None else runs


def assign_lengths(runs: list[_Run], lengths: Lengths) -> list[_Run]:
    """Give every run the resolved lengths (known once the model is loaded); the baseline and the replays' references
    decode one token per step (steps = gen_length)."""
    for run in runs:
        one = run.baseline or getattr(run, "replay", False)
        run.lengths = Lengths(lengths.gen_length, lengths.block_length, lengths.gen_length) if one else lengths
    return runs


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_number(x: float | None, fmt: str = "{:.2f}") -> str:
    """``x`` formatted with ``fmt``, ``-`` for None (a missing table cell)."""
    return "-" if x is None else fmt.format(x)


def _interval(iv: Sequence[float] | None) -> str:
    return "" if not iv else f" [{iv[0]:.2f}-{iv[1]:.2f}]"


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def ratio_interval(base: Sequence[float], other: Sequence[float], level: float = 0.95, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float] | None:
    """A bootstrap interval of ``sum(base) / sum(other)`` over paired rounds (``base[i]`` and ``other[i]`` timed
    back to back on the same samples): how much the wall-clock speedup moves with machine noise and sample mix.
    None with fewer than 2 rounds."""
    pairs = [(b, o) for b, o in zip(base, other) if b is not None and o is not None]
    if len(pairs) < 2:
        return None
    rng = random.Random(seed)
    n = len(pairs)
    ratios = []
    for _ in range(resamples):
        pick = [pairs[rng.randrange(n)] for _ in range(n)]
        den = sum(o for _, o in pick)
        if den > 0:
            ratios.append(sum(b for b, _ in pick) / den)
    if not ratios:
        return None
    ratios.sort()
    lo = ratios[int((1 - level) / 2 * (len(ratios) - 1))]
    hi = ratios[int((1 + level) / 2 * (len(ratios) - 1))]
    return lo, hi


def build_report(bench: str, model_name: str, runs: list[_Run], summaries: list[dict], sweep_key: str | None,
                 round_latencies: Sequence[Sequence[float]] | None = None) -> dict[str, Any]:
    """Rows with speedups vs the baseline, plus AUP per policy when sweeping. ``round_latencies[i]`` are run i's
    wall times per interleaved round (``dllm eval`` times the runs round-robin); with them each row gets
    ``speedup_time_interval``, a 95% bootstrap interval of its wall-clock speedup over rounds. Replay rows get
    ``replay`` true, ``fallbacks`` and ``reference_mean_nfe``, and None for every wall-clock figure."""
    bench_obj, _ = get_benchmark(bench)
    primary = bench_obj.primary_metric
    base = next((s for r, s in zip(runs, summaries) if r.baseline), None)
    base_rounds = next((t for r, t in zip(runs, round_latencies or []) if r.baseline), None)
    rows = []
    for i, (run, s) in enumerate(zip(runs, summaries)):
        replay = bool(getattr(run, "replay", False))
        interval = None
        if base_rounds is not None and round_latencies is not None and not run.baseline and not replay:
            interval = ratio_interval(base_rounds, round_latencies[i])
        timed = base is not None and not replay
        rows.append({
            "label": run.label, "policy": run.policy, "options": run.options, "cache": run.cache,
            "block_schedule": run.schedule, "baseline": run.baseline, "group": run.group, "swept": run.swept,
            "replay": replay, "tag": s["tag"],
            "n": s["n"], "accuracy": s["accuracy"], "per_family": s.get("per_family"),
            "mean_nfe": s["mean_nfe"], "tpf": s["tpf"], "tokens_per_s": s["tokens_per_s"],
            "mean_latency_s": s["mean_latency_s"],
            "speedup_nfe": _ratio(base["mean_nfe"], s["mean_nfe"]) if base else None,
            "speedup_time": _ratio(base["mean_latency_s"], s["mean_latency_s"]) if timed else None,
            "speedup_time_interval": interval,
            "speedup_throughput": _ratio(s["tokens_per_s"], base["tokens_per_s"]) if timed else None,
            "summary": str(Path(s["records"]).with_suffix(".summary.json")),
        })
        if replay:
            rows[-1].update({"tokens_per_s": None, "mean_latency_s": None, "fallbacks": s.get("fallbacks"),
                             "reference_mean_nfe": s.get("reference_mean_nfe")})
    report: dict[str, Any] = {"bench": bench, "model": model_name, "primary_metric": primary, "rows": rows,
                              "timing_rounds": len(base_rounds) if base_rounds is not None else None}
    if sweep_key is not None:
        report["sweep_key"] = sweep_key
        report["aup"], report["aup_y_max"] = _aup(rows, primary)
    return report


def _aup(rows: list[dict], primary: str) -> tuple[dict[str, float | None], float]:
    """AUP (metrics.aup) per swept policy group over its (TPF, accuracy %) points, the baseline's point included;
    y_max = best accuracy of all rows (the comparison group; replay rows are no method and not in it). Points with
    TPF 0 (nothing generated) are left out."""
    import warnings

    from dllm.evals.metrics import aup

    y_max = max(100 * r["accuracy"][primary] for r in rows if not r.get("replay"))
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
    bench_obj, _ = get_benchmark(bench)
    table = Table(title=f"dllm eval · {bench} · {report['model']} · n={rows[0]['n'] if rows else 0}")
    table.add_column("policy")
    extra = bench_obj.extra_columns(rows)
    for header, _key in bench_obj.columns:
        table.add_column(header, justify="right")
    for header, _fn in extra:
        table.add_column(header, justify="right")
    for name in ("NFE", "TPF", "tok/s", "s/sample", "xNFE", "xtime"):
        table.add_column(name, justify="right")
    for r in rows:
        cells = [_pct(r["accuracy"].get(key)) for _header, key in bench_obj.columns]
        cells += [_pct(fn(r)) for _header, fn in extra]
        cells += [format_number(r["mean_nfe"], "{:.1f}"), format_number(r["tpf"]),
                  format_number(r["tokens_per_s"], "{:.1f}"), format_number(r["mean_latency_s"], "{:.3f}"),
                  format_number(r["speedup_nfe"], "{:.2f}x"),
                  format_number(r["speedup_time"], "{:.2f}x") + _interval(r.get("speedup_time_interval"))]
        table.add_row(r["label"], *cells, style="dim" if r["baseline"] else "italic" if r.get("replay") else None)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 200))
    console.print(table)
    console.print(
        "[dim]NFE = forwards per sample; TPF = generated tokens / NFE; s/sample = batched generate wall time / rows "
        "(warm-up excluded); xNFE, xtime = speedup vs the baseline as NFE ratio and wall-clock ratio"
        + (f"; runs timed round-robin in {report['timing_rounds']} rounds, \\[lo-hi] = 95% bootstrap interval of xtime "
           "over rounds" if report.get("timing_rounds") else "") + ".[/]"
    )
    replays = [r for r in rows if r.get("replay")]
    if replays:
        falls = ", ".join(f"{r['label']} {r['fallbacks']} in {round(r['mean_nfe'] * r['n'])}" for r in replays)
        console.print(
            "[dim]replay cache=C = the fewest forwards that reproduce lowconf's one-token-per-step output with cache "
            "C (same texts, so its accuracy is that decode's); it needs that output first, so it is a reference "
            f"point, not a policy, and has no wall-clock time. Fallback forwards (reference token not the model's "
            f"argmax): {falls}.[/]", highlight=False)
    if "aup" in report:
        console.print(f"AUP ({report['primary_metric']}, accuracy % vs TPF, y_max={report['aup_y_max']:.1f}):")
        for group, value in report["aup"].items():
            console.print(f"  {group}: {'-' if value is None else f'{value:.2f}'}", highlight=False)


def plot_frontier(report: dict[str, Any], path: str) -> Any:
    """Accuracy (primary metric, %) vs TPF: one line per policy group, the baseline as a star, replay rows as
    hollow diamonds (``REPLAY_LABEL``, with the cache when there are several). Returns the (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = report["primary_metric"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    rows = [r for r in report["rows"] if r["tpf"] is not None]
    methods = [r for r in rows if not r["baseline"] and not r.get("replay")]
    for group in dict.fromkeys(r["group"] for r in methods):
        members = sorted((r for r in methods if r["group"] == group), key=lambda r: r["tpf"])
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
    replays = [r for r in rows if r.get("replay")]
    for k, r in enumerate(replays):
        label = REPLAY_LABEL + (f" {r['label'].removeprefix('replay ')}" if len(replays) > 1 else "")
        ax.scatter([r["tpf"]], [100 * r["accuracy"][primary]], marker="D", s=70, facecolors="none",
                   edgecolors=_REPLAY_COLORS[k % len(_REPLAY_COLORS)], linewidths=1.5, label=label, zorder=3)
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
    return fig


__all__ = ["BASELINE_POLICY", "REPLAY_LABEL", "assign_lengths", "build_report", "format_number", "ratio_interval",
           "plan_runs", "plot_frontier", "print_report"]
