"""Presets (``dllm.samplers.registry.PRESETS``, docs/design.md#presets): a name for a policy + option values + cache
+ block schedule that every entry point takes as a policy name. A preset decodes exactly as its parts spelled out
by hand; the caller's options, cache and schedule override the preset's; bad overrides are one-line errors."""

from __future__ import annotations

import json

import pytest

import dllm
from dllm.errors import DllmError
from dllm.evals.settings import Lengths, check_run
from dllm.evals.synthetic import load_split
from dllm.options import check_configuration, option_table, resolve_preset, route_options
from dllm.samplers.registry import POLICIES, PRESETS, Preset, make_policy

GEN = 16
#: a throwaway preset that sets every part: policy options (its own and a common one), cache and schedule
#: options; on tiny-llada each of them changes the tokens (checked below), so a part the expansion drops fails.
#: The adaptive blocks end at EOS (id 2; the tiny model never predicts the default newline delimiter).
SCHEDULE = {"delimiters": [2], "window_fraction": 0.5}
MIXED = Preset("threshold", {"threshold": 0.5, "eotp": "reference"}, cache="dual", cache_options={"vicinity": 1},
               block_schedule="adaptive", schedule_options=SCHEDULE)
MIXED_PARTS = dict(policy="threshold", threshold=0.5, eotp="reference", cache="dual", vicinity=1,
                   block_schedule="adaptive", **SCHEDULE)


@pytest.fixture(scope="module")
def prompts(tiny):
    return [tiny.tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in load_split("test", 5)]


@pytest.fixture
def mixed():
    PRESETS.add("mixedtest", "test preset", lambda: MIXED)
    yield "mixedtest"
    PRESETS.remove("mixedtest")


def gen(tiny, prompts, **kw):
    kw.setdefault("gen_length", GEN)
    kw.setdefault("block_length", 4)
    return dllm.generate(tiny, prompts, **kw)


def test_turbo_is_its_parts(tiny, prompts):
    preset = gen(tiny, prompts, policy="turbo", block_length=GEN)
    parts = gen(tiny, prompts, policy="ebsampler", gamma=0.3, block_length=GEN)
    assert preset.tokens.tolist() == parts.tokens.tolist() and preset.seq_nfe == parts.seq_nfe
    # the preset's gamma acts: EB-Sampler's default (0.1) takes more forwards on these prompts
    default = gen(tiny, prompts, policy="ebsampler", block_length=GEN)
    assert sum(default.seq_nfe) > sum(preset.seq_nfe)


def test_a_preset_with_every_part_is_its_parts(tiny, prompts, mixed):
    preset = gen(tiny, prompts, policy=mixed)
    parts = gen(tiny, prompts, **MIXED_PARTS)
    assert preset.tokens.tolist() == parts.tokens.tolist() and preset.seq_nfe == parts.seq_nfe
    assert preset.cache_stats["forwarded"] == parts.cache_stats["forwarded"]  # the dual cache with vicinity 1
    # each part matters here, so an expansion that dropped one would fail the equality above
    without = gen(tiny, prompts, **{**MIXED_PARTS, "vicinity": 0})
    assert without.cache_stats["forwarded"] != parts.cache_stats["forwarded"]  # vicinity costs forwarded positions
    for drop in ({"cache": "none", "vicinity": None},
                 {"block_schedule": "fixed", "window_fraction": None, "delimiters": None},
                 {"threshold": None}, {"eotp": None}):
        kw = {k: v for k, v in {**MIXED_PARTS, **drop}.items() if v is not None}
        other = gen(tiny, prompts, **kw)
        assert (other.tokens.tolist(), other.seq_nfe) != (parts.tokens.tolist(), parts.seq_nfe), drop


def test_the_callers_options_override_the_presets(tiny, prompts, mixed):
    # an option: the caller's value wins
    out = gen(tiny, prompts, policy="turbo", gamma=0.1, block_length=GEN)
    ref = gen(tiny, prompts, policy="ebsampler", gamma=0.1, block_length=GEN)
    assert out.tokens.tolist() == ref.tokens.tolist() and out.seq_nfe == ref.seq_nfe
    # a common option switched off (eotp) and a cache option changed
    out = gen(tiny, prompts, policy=mixed, eotp="off", vicinity=0)
    ref = gen(tiny, prompts, **{**MIXED_PARTS, "vicinity": 0, "eotp": "off"})
    assert out.tokens.tolist() == ref.tokens.tolist() and out.seq_nfe == ref.seq_nfe
    # another cache replaces the preset's together with its options (vicinity stays the cache's default)
    out = gen(tiny, prompts, policy=mixed, cache="prefix")
    ref = gen(tiny, prompts, **{**MIXED_PARTS, "cache": "prefix", "vicinity": 0})
    assert out.cache_stats["forwarded"] == ref.cache_stats["forwarded"] and out.tokens.tolist() == ref.tokens.tolist()
    # another schedule likewise: turbo's fixed blocks replaced by adaptive ones with the caller's options
    out = gen(tiny, prompts, policy="turbo", block_schedule="adaptive", **SCHEDULE)
    ref = gen(tiny, prompts, policy="ebsampler", gamma=0.3, block_schedule="adaptive", **SCHEDULE)
    assert out.tokens.tolist() == ref.tokens.tolist() and out.seq_nfe == ref.seq_nfe
    # Quirk: the default names (cache none, fixed blocks) cannot be told from "not given", so they keep the
    # preset's parts (docs/design.md#presets gives the ways around it)
    out = gen(tiny, prompts, policy=mixed, cache="none", block_schedule="fixed")
    ref = gen(tiny, prompts, **MIXED_PARTS)
    assert out.tokens.tolist() == ref.tokens.tolist() and out.cache_stats["forwarded"] == ref.cache_stats["forwarded"]


def test_resolution():
    assert resolve_preset("turbo") == ("ebsampler", "none", "fixed", {"gamma": 0.3})
    assert resolve_preset("turbo", options={"gamma": 0.5, "eotp": "reference"}) == (
        "ebsampler", "none", "fixed", {"gamma": 0.5, "eotp": "reference"})
    assert resolve_preset("threshold", "dual", "fixed", {"threshold": 0.8}) == (
        "threshold", "dual", "fixed", {"threshold": 0.8})  # a policy name passes through
    routed = route_options("turbo", "prefix", "fixed", {"refresh": 2})
    assert routed.names == ("ebsampler", "prefix", "fixed")
    assert routed.policy == {"gamma": 0.3} and routed.cache == {"refresh": 2}
    # the option table of a preset has the preset's values as defaults: listings and eval fingerprints see them
    assert option_table("turbo")["gamma"][1].default == 0.3
    assert option_table("ebsampler")["gamma"][1].default == 0.1


@pytest.mark.parametrize("opts,match", [
    (dict(gamma=-1), r"gamma -1 is outside >= 0"),
    (dict(gama=0.2), r"unknown option 'gama' for preset 'turbo' \(policy 'ebsampler'\) with cache 'none'; allowed: "),
    (dict(threshold=0.9), r"unknown option 'threshold' for preset 'turbo'"),
    (dict(cache="dual", refresh=0), "refresh must be 'block' or a positive integer"),
    (dict(eotp="sometimes"), "eotp mode"),
])
def test_bad_overrides_are_one_line(tiny, opts, match):
    for check in (lambda: gen(tiny, [[5, 6, 7]], policy="turbo", **opts),
                  lambda: check_configuration("turbo", opts.pop("cache", "none"), "fixed", opts)):
        with pytest.raises(DllmError, match=match) as err:
            check()
        assert "\n" not in str(err.value)


def test_entry_points_take_a_preset_name(mixed):
    # dllm eval checks every run before loading a model: a preset with a schedule option passes
    check_run(mixed, {}, "none", "fixed", Lengths(16, 4, 16))
    check_run("turbo", {"gamma": 0.2}, "dual", "adaptive", Lengths(16, 4, 16))
    with pytest.raises(DllmError, match="is a preset"):
        make_policy("turbo")  # a preset is more than a policy: make_policy says so in one line


def test_presets_are_listed_by_dllm_policies(capsys):
    from dllm.cli.app import main

    main(["policies", "--json"])
    listing = json.loads(capsys.readouterr().out)
    turbo = next(p for p in listing["presets"] if p["name"] == "turbo")
    assert "ebsampler gamma=0.3, cache none, fixed blocks" in turbo["summary"]
    assert [(o["name"], o["default"]) for o in turbo["options"]] == [("gamma", 0.3)]
    assert "turbo" not in [p["name"] for p in listing["policies"]]


def test_every_shipped_preset_resolves_to_registered_pieces():
    assert not set(PRESETS.names()) & set(POLICIES.names())  # a preset name never shadows a policy
    for name in PRESETS.names():
        policy, cache, schedule, options = resolve_preset(name)
        check_configuration(name, "none", "fixed", {})
        assert policy in POLICIES and cache in dllm.caches() and schedule in dllm.block_schedules()
