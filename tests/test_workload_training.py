"""The workload model's training (``dllm.training.workload``): data layout, checkpoint format, resume."""

from __future__ import annotations

import json

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.evals import gsm8k as gsm8k_lib
from dllm.evals import humaneval as humaneval_lib
from dllm.training.workload import (
    WorkloadConfig,
    WorkloadData,
    humaneval_target,
    load_workload_tokenizer,
    train_workload,
    validate,
)

TINY = dict(hidden=32, layers=2, heads=2, batch_size=4, val_examples=4, val_every=2, log_every=1,
            n_gsm8k=60, n_humaneval=30)


@pytest.fixture(scope="module")
def tok():
    return load_workload_tokenizer()


def test_examples_are_chat_prompts_and_eos_padded_targets(tok):
    cfg = WorkloadConfig(fewshot_share=0.0, task_weights={"gsm8k": 1.0})
    data = WorkloadData(cfg, tok, tok.convert_tokens_to_ids("<|endoftext|>"), seed=0, n_gsm8k=50, n_humaneval=10)
    prompt, target = data.example()
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert len(target) == cfg.gen_length
    n = target.index(eos)
    assert set(target[n:]) == {eos}
    text = tok.decode(target[:n])
    doc = next(d for d in data.gsm8k if d["answer"] == text)
    # the prompt is exactly what the GSM8K benchmark sends a chat model (0-shot here)
    assert tok.decode(prompt) == gsm8k_lib.build_prompt(doc, [], tokenizer=tok, chat=True)
    assert text.rstrip().splitlines()[-1].startswith("#### ")


def test_fewshot_prompts_hold_k_other_train_examples(tok):
    cfg = WorkloadConfig(fewshot_share=1.0, max_fewshot=3, task_weights={"gsm8k": 1.0})
    data = WorkloadData(cfg, tok, 2, seed=1, n_gsm8k=50, n_humaneval=10)
    counts = set()
    for _ in range(20):
        prompt, _ = data.example()
        counts.add(tok.decode(prompt).count("Question:") - 1)
    assert counts <= {1, 2, 3} and len(counts) >= 2


def test_humaneval_target_passes_the_harness():
    from dllm.evals import generators as wl

    for problem in wl.humaneval_problems("train", 3, seed=0):
        assert humaneval_lib.score(problem, humaneval_target(problem))["passed"]
        broken = humaneval_target(problem).replace("return", "return None and", 1)
        assert not humaneval_lib.score(problem, broken)["passed"]


@pytest.mark.parametrize("bad, message", [
    (dict(hidden=30, heads=4), "heads"),
    (dict(gen_length=100, block_length=32), "multiple"),
    (dict(weighting="bogus"), "weighting"),
    (dict(task_weights={"mmlu": 1.0}), "mmlu"),
    (dict(fewshot_share=1.5), "fewshot_share"),
])
def test_bad_configuration_is_one_line(bad, message):
    with pytest.raises(DllmError, match=message):
        validate(WorkloadConfig(**bad))


def test_trains_saves_a_loadable_llada_checkpoint_and_resumes(tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "run"
    train_workload(WorkloadConfig(out=str(out), steps=2, **TINY))
    best = out / "best"
    config = json.loads((best / "config.json").read_text())
    assert config["model_type"] == "llada" and config["max_sequence_length"] == 1280
    assert json.loads((best / "generation_config.json").read_text())["dllm"] == {
        "gen_length": 256, "block_length": 32, "steps": 256, "chat": True}
    model = dllm.load_model(str(best))
    assert model.special.mask == model.tokenizer.convert_tokens_to_ids("<|mdm_mask|>")
    assert next(model.parameters()).dtype == torch.float32  # loaded for CPU scoring
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["step"] == 2
    train_workload(WorkloadConfig(out=str(out), steps=4, **TINY))
    resumed = torch.load(out / "train_state.pt", weights_only=False)
    assert resumed["step"] == 4
    assert [h["step"] for h in resumed["history"]][:1] == [2]
    log = (out / "train.log").read_text()
    assert "resumed at step 2" in log


def test_prebuilt_pool_is_seeded_and_matches_on_the_fly_examples(tok):
    cfg = WorkloadConfig(n_gsm8k=40, n_humaneval=20, fewshot_share=0.5)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    a = WorkloadData(cfg, tok, eos, seed=3, n_gsm8k=40, n_humaneval=20)
    a.prebuild(6, workers=2)
    b = WorkloadData(cfg, tok, eos, seed=3, n_gsm8k=40, n_humaneval=20)
    b.prebuild(6, workers=2)
    assert a.prebuilt == b.prebuilt and len(a.prebuilt) == 6
    # worker i draws exactly what an on-the-fly sampler seeded (seed, i) draws
    ref = WorkloadData(cfg, tok, eos, seed=3, n_gsm8k=40, n_humaneval=20)
    import random

    ref.rng = random.Random("3/1")
    assert a.prebuilt[3:] == [ref.example() for _ in range(3)]
    assert all(len(t) == cfg.gen_length for _, t in a.batch(10))


def test_init_from_starts_at_a_checkpoints_weights(tmp_path):
    first = tmp_path / "a"
    train_workload(WorkloadConfig(out=str(first), steps=1, **TINY))
    second = tmp_path / "b"
    train_workload(WorkloadConfig(out=str(second), steps=1, lr=1e-12, init_from=str(first / "best"), **TINY))
    assert "initialised from" in (second / "train.log").read_text()
    a = dllm.load_model(str(first / "best")).state_dict()
    b = dllm.load_model(str(second / "last")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # one step at lr 1e-12 leaves the bf16 weights as they were
    fresh = tmp_path / "c"
    train_workload(WorkloadConfig(out=str(fresh), steps=1, lr=1e-12, seed=5, **TINY))
    c = dllm.load_model(str(fresh / "last")).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(DllmError, match="other dimensions"):
        train_workload(WorkloadConfig(out=str(tmp_path / "d"), steps=1, init_from=str(first / "best"),
                                      **{**TINY, "hidden": 64}))
