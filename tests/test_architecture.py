"""The extension seams: layering, the registry idiom, the option router, benchmarks as plug-ins, the listings."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

import dllm
from dllm.cache import CACHES
from dllm.errors import DllmError
from dllm.evals import runner
from dllm.evals.bench import BENCHMARKS, Benchmark, Sample, tokenize
from dllm.evals.report import build_report, plan_runs, print_report
from dllm.options import option_table, route_options
from dllm.registry import Option, Registry
from dllm.samplers.registry import COMMON, POLICIES, SCHEDULES, policy_options

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import check_layers  # noqa: E402


# --- layering ----------------------------------------------------------------------------------------------
def test_package_layering_holds():
    assert check_layers.check() == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path


def test_layer_check_finds_an_upward_import_and_a_circle(tmp_path):
    root = _tree(tmp_path, {
        "dllm/__init__.py": "",
        "dllm/kernels/__init__.py": "",
        "dllm/kernels/k.py": "def f():\n    from dllm.training import t\n",  # local import: still an edge
        "dllm/training/__init__.py": "",
        "dllm/training/t.py": "",
        "dllm/models/__init__.py": "",
        "dllm/models/a.py": "from dllm.models import b\n",
        "dllm/models/b.py": "import dllm.models.a\n",
    })
    problems = check_layers.check(root)
    assert any("dllm.kernels.k (kernels) imports dllm.training.t (training)" in p for p in problems)
    assert any(p.startswith("import circle") and "dllm.models.a" in p and "dllm.models.b" in p for p in problems)
    assert len(problems) == 2


# --- the registry idiom ------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt,value,expected", [
    (Option("t", 0.9, "", low=0, low_open=True, high=1), "0.5", 0.5),
    (Option("t", 0.9, "", low=0, low_open=True, high=1), 1, 1.0),
    (Option("n", 3, "", kind=int, low=1), "4", 4),
    (Option("b", False, "", kind=bool), "yes", True),
    (Option("b", False, "", kind=bool), 0, False),
    (Option("c", "a", "", kind=str, choices=("a", "b")), "b", "b"),
    (Option("d", 7, "", kind=int), None, 7),
    (Option("z", None, "", nullable=True), None, None),
])
def test_option_check_converts(opt, value, expected):
    got = opt.check(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("opt,value,match", [
    (Option("t", 0.9, "", low=0, low_open=True, high=1), 0, r"t 0 is outside \(0, 1\]"),
    (Option("t", 0.9, "", low=0, low_open=True, high=1), 1.5, r"outside \(0, 1\]"),
    (Option("t", 0.9, "", low=0, low_open=True, high=1), "abc", "t must be a number, got 'abc'"),
    (Option("t", 0.9, "", low=0, high=1), float("nan"), "must be a number"),
    (Option("n", 3, "", kind=int, low=1), 2.5, "n must be an integer"),
    (Option("n", 3, "", kind=int, low=1), 0, r"outside >= 1"),
    (Option("n", 3, "", kind=int), True, "n must be an integer"),
    (Option("b", False, "", kind=bool), "maybe", "b must be true or false"),
    (Option("c", "a", "", kind=str, choices=("a", "b")), "x", "choose one of: a, b"),
])
def test_option_check_rejects_in_one_line(opt, value, match):
    with pytest.raises(DllmError, match=match) as err:
        opt.check(value)
    assert "\n" not in str(err.value)


def test_registry_discovers_every_module_of_its_package(tmp_path, monkeypatch):
    """Adding a plug-in is adding one file: the registry imports every module of its package on first use."""
    pkg = tmp_path / "plugpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from dllm.registry import Registry\nREG = Registry('thing', 'plugpkg')\n"
                                     "LISTING_ORDER = ('two',)\n")
    for name in ("one", "two"):
        (pkg / f"{name}.py").write_text(
            "from dllm.registry import Option\nfrom plugpkg import REG\n"
            f"REG.register('{name}', 'the {name}', options=[Option('k', 1, 'k', kind=int, low=0)])(lambda k: ('{name}', k))\n")
    (pkg / "_private.py").write_text("raise RuntimeError('modules starting with _ are not plug-ins')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("plugpkg.one")  # imported (and registered) before the registry's first lookup
    reg = importlib.import_module("plugpkg").REG
    assert reg.names() == ["two", "one"]  # listed in LISTING_ORDER, not in import order
    assert reg.build("two", k="5") == ("two", 5)
    assert reg.build("one") == ("one", 1)  # defaults filled in
    with pytest.raises(DllmError, match="unknown option 'j' for thing 'one'; allowed: k"):
        reg.build("one", j=1)
    with pytest.raises(DllmError, match="unknown thing 'three'; choose one of: two, one"):
        reg.get("three")
    for name in [n for n in sys.modules if n == "plugpkg" or n.startswith("plugpkg.")]:
        del sys.modules[name]


def test_registry_refuses_duplicate_names_and_options():
    reg = Registry("thing")
    reg.add("a", "", lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", "", lambda: 2)
    with pytest.raises(ValueError, match="declares an option twice"):
        reg.add("b", "", lambda x: x, [Option("x", 1, ""), Option("x", 2, "")])


def test_every_plugin_kind_uses_the_registry_and_declares_its_factory_arguments():
    """Every built-in entry's declared options are exactly its factory's keyword arguments, so a declaration
    cannot drift from the code it describes."""
    import inspect

    fixed_args = {"cache": ("model", "key_mask", "positions", "gen_start", "gen_end"),
                  "block schedule": ("gen_length", "block_length", "steps")}
    for registry in (POLICIES, CACHES, SCHEDULES):
        for entry in registry.entries():
            params = [p for p in inspect.signature(entry.factory).parameters
                      if p not in fixed_args.get(registry.kind, ())]
            assert params == entry.option_names(), (registry.kind, entry.name)
    assert set(dllm.policies()) >= {"lowconf", "random", "threshold", "factor", "creditdecoding", "earlycommit",
                                    "learnedfilter"}
    assert list(dllm.caches()) == ["none", "prefix", "dual", "delayed"]
    assert list(dllm.block_schedules()) == ["fixed", "adaptive"]
    assert BENCHMARKS.names()[:3] == ["synthetic", "gsm8k", "humaneval"]
    from dllm.models import MODELS

    assert MODELS.names() == ["dream", "llada"] or MODELS.names() == ["llada", "dream"]


# --- the option router -------------------------------------------------------------------------------------
def test_router_splits_options_by_piece():
    routed = route_options("threshold", "dual", "adaptive",
                           {"threshold": 0.8, "refresh": 4, "delimiter_threshold": 0.5, "eotp": "threshold"})
    assert routed.policy == {"threshold": 0.8, "eotp": "threshold"}
    assert routed.cache == {"refresh": 4}
    assert routed.block_schedule == {"delimiter_threshold": 0.5}


def test_router_lists_what_is_allowed_for_an_unknown_option():
    with pytest.raises(DllmError, match="unknown option 'refesh' for policy 'threshold' with cache 'dual'; allowed: .*refresh"):
        route_options("threshold", "dual", "fixed", {"refesh": 2})


def test_router_refuses_an_option_name_two_pieces_declare():
    from dllm.cache.managers import PrefixCache  # not at module level: importing the kernels early would fix
    # triton's interpreter setting before tests/test_kernels.py sets TRITON_INTERPRET

    CACHES.add("clash", "a cache that reuses the policy option name 'threshold'", PrefixCache,
               [Option("threshold", 1, "", kind=int)])
    try:
        with pytest.raises(DllmError, match="'threshold' is declared by both policy 'threshold' and cache 'clash'"):
            option_table("threshold", "clash", "fixed")
        assert "threshold" in option_table("lowconf", "clash", "fixed")  # no clash where the policy lacks it
    finally:
        CACHES.remove("clash")
    assert "clash" not in dllm.caches()


def test_policy_options_include_the_common_groups():
    names = [o.name for o in policy_options("factor")]
    assert names[:3] == ["factor", "rule", "temperature"]
    assert [n for g in COMMON for n in g.names] == names[3:]


# --- the API uses the checkpoint's defaults, as the CLI does -----------------------------------------------
def test_api_uses_the_checkpoint_decoding_defaults_and_loads_shipped_models_by_name():
    model = dllm.load_model("tiny-llada", device="cpu")
    assert dllm.decoding_lengths(model) == (16, 16, 16)
    assert dllm.decoding_lengths(model, gen_length=64) == (64, 32, 64)  # the checkpoint's block applies at 16 only
    out = dllm.generate(model, ["sort:8315="])
    assert out.tokens.shape == (1, 16) and out.texts == ["1358"]
    ids = dllm.encode_prompt(model, "sort:8315=")
    assert torch.equal(dllm.generate(model, [ids]).tokens, out.tokens)


def test_generation_output_carries_the_cache_counters():
    model = dllm.load_model("tiny-llada", device="cpu")
    kw = dict(policy="lowconf", gen_length=16, block_length=8, stop_at_eos=False)
    none = dllm.generate(model, ["reverse:dllm42=", "sort:8315="], **kw)
    dual = dllm.generate(model, ["reverse:dllm42=", "sort:8315="], cache="dual", **kw)
    assert none.cache_stats == {"calls": none.nfe, "nfe": none.seq_nfe}
    assert dual.cache_stats["calls"] == dual.nfe and dual.cache_stats["nfe"] == dual.seq_nfe
    assert dual.cache_stats["refreshes"] == [2, 2]  # one full forward per block opened (16 / 8 blocks)
    assert all(f < 16 * n for f, n in zip(dual.cache_stats["forwarded"], dual.seq_nfe))


# --- benchmarks as plug-ins --------------------------------------------------------------------------------
class _Copy(Benchmark):
    """A throwaway benchmark: copy tasks scored by exact match, with one declared option."""

    name = "copytest"
    score_keys = ("exact",)
    primary_metric = "exact"
    columns = (("exact %", "exact"),)
    takes_data = False

    def default_lengths(self, model):
        return {"gen_length": 16, "block_length": 16, "steps": 16}

    def default_chat(self, model):
        return False

    def data_fingerprint(self, data, options):
        return dict(options)

    def load_samples(self, model, *, limit, data, chat, words=("abc", "dllm42", "xyz")):
        words = list(words)[:limit] if limit else list(words)
        return [Sample(w, i, f"copy:{w}=", tokenize(model, f"copy:{w}=", False), w, {"target": w})
                for i, w in enumerate(words)]

    def score(self, sample, completion, **options):
        return {"exact": completion.split("<")[0].strip() == sample.ref}, {"postprocessed": completion}


def test_a_new_benchmark_is_one_registration(tmp_path, capsys):
    BENCHMARKS.add("copytest", "copy words", _Copy, [Option("words", ("abc", "dllm42", "xyz"), "words", kind=None,
                                                            parse=tuple)])
    try:
        model = dllm.load_model("tiny-llada", device="cpu")
        lengths = runner.resolve_lengths(model, "copytest")
        runs = plan_runs(["threshold"], {}, "none", "fixed", lengths, True, None)
        summaries = [runner.evaluate(model, "copytest", r.policy, r.options, gen_length=16, block_length=16,
                                     steps=r.lengths.steps, out_dir=tmp_path, progress=False, words=("abc", "dllm42"))
                     for r in runs]
        assert [s["n"] for s in summaries] == [2, 2]
        assert summaries[0]["accuracy"] == {"exact": 1.0}
        assert summaries[0]["config"]["words"] == ["abc", "dllm42"] or summaries[0]["config"]["words"] == ("abc", "dllm42")
        report = build_report("copytest", "tiny-llada", runs, summaries, None)
        print_report(report)
        out = capsys.readouterr().out
        assert "exact %" in out and "100.0" in out
        with pytest.raises(DllmError, match="unknown option 'nope' for benchmark 'copytest'"):
            runner.evaluate(model, "copytest", out_dir=tmp_path, progress=False, nope=1)
    finally:
        BENCHMARKS.remove("copytest")


# --- listings: `dllm policies` and `dllm models` come from the registries ----------------------------------
def test_policies_listing_is_the_registry(capsys):
    from dllm.cli.app import main

    main(["policies", "--json"])
    listing = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listing["policies"] if not p["name"].startswith("(")] == list(dllm.policies())
    threshold = next(p for p in listing["policies"] if p["name"] == "threshold")
    assert threshold["options"][0] == {"name": "threshold", "default": 0.9, "allowed": "(0, 1]",
                                       "help": POLICIES.get("threshold").option("threshold").help}
    assert [c["name"] for c in listing["caches"]] == list(dllm.caches())
    delayed = next(c for c in listing["caches"] if c["name"] == "delayed")
    assert delayed["options"][0]["default"] == 8 and delayed["options"][1]["allowed"] == ">= 0 (integer)"
    assert [s["name"] for s in listing["block schedules"]] == ["fixed", "adaptive"]
    assert {"synthetic", "gsm8k", "humaneval"} <= {b["name"] for b in listing["benchmarks"]}
    common = [p for p in listing["policies"] if p["name"].startswith("(")]
    assert {o["name"] for c in common for o in c["options"]} >= {"early_commit", "eotp", "eotp_threshold"}


def test_models_listing_names_the_kinds_and_the_shipped_checkpoints(capsys):
    from dllm.cli.app import main

    main(["models"])
    out = capsys.readouterr().out
    for text in ("llada", "dream", "GSAI-ML/LLaDA-8B-Instruct", "shipped: tiny-llada", "shipped: tiny-dream"):
        assert text in out, text


# --- the shipped workload is the text benchmarks' data for a shipped model ----------------------------------
def test_text_benchmarks_use_the_shipped_workload_for_a_shipped_model(tmp_path):
    from dllm.evals import generators
    from dllm.evals.gsm8k import load_gsm8k
    from dllm.evals.humaneval import load_humaneval

    model = dllm.load_model("tiny-llada", device="cpu")
    g = runner.load_samples(model, "gsm8k", limit=3, num_fewshot=1)
    assert [s.ref["question"] for s in g] == [d["question"] for d in load_gsm8k(generators.GSM8K_TEST, limit=3)]
    pool = {d["question"] for d in load_gsm8k(generators.GSM8K_FEWSHOT)}
    assert any(q in g[0].prompt for q in pool)  # the shot comes from the shipped train pool
    h = runner.load_samples(model, "humaneval", limit=2)
    assert [s.id for s in h] == [p["task_id"] for p in load_humaneval(generators.HUMANEVAL_TEST, limit=2)]
    # the tiny synthetic model's 256 positions cannot hold these prompts: one line, and no file is written
    with pytest.raises(DllmError, match="exceeds the model's maximum length 256"):
        runner.evaluate(model, "gsm8k", out_dir=tmp_path / "out", limit=2, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_help_choice_lists_come_from_the_registries():
    import typer

    from dllm.cli.app import _register, app

    _register()
    group = typer.main.get_command(app)
    helps = {(cmd, p.name): p.help for cmd in ("generate", "eval") for p in group.commands[cmd].params}
    from dllm.samplers.registry import presets

    names = f"{', '.join(dllm.policies())} (or a preset: {', '.join(presets())})"  # presets are policy names too
    assert helps[("generate", "policy")].startswith(f"Unmasking policy: {names} (")
    assert helps[("eval", "policy")] == f"Comma-separated policies to compare, from: {names}."
    for cmd in ("generate", "eval"):
        assert helps[(cmd, "cache")].endswith(f": {', '.join(dllm.caches())}.")
        assert helps[(cmd, "block_schedule")].endswith(f": {', '.join(dllm.block_schedules())}.")
    assert helps[("eval", "bench")] == f"Benchmark: {', '.join(BENCHMARKS.names())}."


@pytest.mark.parametrize("args, needle", [
    (["generate", "-o", "nosuch=1", "sort:8315="], "unknown option 'nosuch' for policy 'threshold'"),
    (["generate", "--policy", "creditdecoding", "-o", "decay_beta=2", "sort:8315="], "decay_beta 2 is outside [0, 1]"),
    (["generate", "--policy", "earlycommit", "-o", "threshold=0.5", "sort:8315="], "base='threshold' only"),
    (["generate", "--cache", "dual", "-o", "refresh=0", "sort:8315="], "refresh must be 'block' or a positive integer"),
    (["eval", "--bench", "synthetic", "--policy", "factor", "-o", "factor=-1"], "factor -1 is outside > 0"),
])
def test_cli_checks_options_before_loading_the_model(monkeypatch, capsys, args, needle):
    from dllm.cli.app import main

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(dllm, "load_model", no_load)
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("error:") and needle in err and "\n" not in err
