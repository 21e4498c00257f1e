"""Masked-diffusion training: canvas layout = evaluation layout, masking, Dream shift, a real short run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import dllm
from dllm.engine import build_canvas
from dllm.errors import DllmError
from dllm.evals.synthetic import ANSWER_LENGTH, load_split
from dllm.models.loading import build_model, special_tokens
from dllm.training.diffusion import (
    TrainConfig,
    answer_ids,
    diffusion_loss,
    mask_answers,
    model_config,
    train_tiny,
    training_canvas,
    validate,
)
from dllm.training.tokenizer import build_char_tokenizer

TOK = build_char_tokenizer()


def _model(kind: str, seed: int = 0) -> dllm.DiffusionLM:
    cfg = TrainConfig(kind=kind, hidden=32, layers=1, heads=2)
    model = build_model(model_config(cfg, len(TOK)), seed=seed)
    model.tokenizer = TOK
    model.special = special_tokens(model.config, TOK, "test")
    return model


def _batch(n: int = 6) -> tuple[list[list[int]], list[list[int]]]:
    # Ragged on purpose: gsm-mini prompts are ~5x longer than copy prompts.
    exs = load_split("train", n_per_family=2, families=["copy", "add", "gsm-mini"])[:n]
    prompts = [TOK(e.prompt, add_special_tokens=False)["input_ids"] for e in exs]
    return prompts, [answer_ids(e.answer, TOK, 2) for e in exs]


def test_char_special_ids_reach_the_model() -> None:
    model = _model("llada")
    assert (model.special.pad, model.special.bos, model.special.eos, model.special.mask) == (0, 1, 2, 3)
    assert TOK.convert_ids_to_tokens([0, 1, 2, 3]) == ["<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>"]


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_training_canvas_is_the_evaluation_canvas(kind: str) -> None:
    model = _model(kind)
    prompts, answers = _batch()
    assert len({len(p) for p in prompts}) > 2
    canvas, key_mask, positions, gen_start = training_canvas(model, prompts, answers, torch.device("cpu"))
    ev_canvas, ev_key, ev_pos, ev_start = build_canvas(model, prompts, ANSWER_LENGTH, torch.device("cpu"))
    assert gen_start == ev_start == max(len(p) for p in prompts)
    assert torch.equal(canvas[:, :gen_start], ev_canvas[:, :gen_start])
    assert torch.equal(key_mask, ev_key) and torch.equal(positions, ev_pos)
    assert (ev_canvas[:, gen_start:] == model.special.mask).all()
    for i, (p, a) in enumerate(zip(prompts, answers)):
        pad = gen_start - len(p)
        assert canvas[i, pad:gen_start].tolist() == p  # left padding, prompt right before the answer
        assert canvas[i, gen_start:].tolist() == a  # answer then EOS fill
        assert a[-1] == model.special.eos and len(a) == ANSWER_LENGTH
        assert not key_mask[i, :pad].any() and key_mask[i, pad:].all()
        assert positions[i, pad:].tolist() == list(range(len(p) + ANSWER_LENGTH))


def test_padding_is_invisible_so_length_buckets_change_nothing() -> None:
    """Bucketing a batch by prompt length is only sound if a row's logits do not depend on its padding."""
    model = _model("llada").eval()
    prompts, answers = _batch()
    canvas, key_mask, positions, gen_start = training_canvas(model, prompts, answers, torch.device("cpu"))
    with torch.no_grad():
        batched = model(canvas, positions, key_mask, logits_index=slice(gen_start, None))
        for i in range(len(prompts)):
            c, k, p, s = training_canvas(model, [prompts[i]], [answers[i]], torch.device("cpu"))
            alone = model(c, p, k, logits_index=slice(s, None))
            torch.testing.assert_close(batched[i], alone[0], rtol=1e-4, atol=1e-4)


def test_masking_never_touches_prompt_and_masks_at_least_one() -> None:
    model = _model("llada")
    prompts, answers = _batch()
    canvas, key_mask, positions, gen_start = training_canvas(model, prompts, answers, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    seen_t = []
    for _ in range(200):
        noisy, masked, t = mask_answers(canvas, gen_start, 3, 1e-3, gen)
        assert not masked[:, :gen_start].any()
        assert torch.equal(noisy[:, :gen_start], canvas[:, :gen_start])
        assert masked[:, gen_start:].any(-1).all()
        assert torch.equal(noisy[masked], torch.full_like(noisy[masked], 3))
        assert torch.equal(noisy[~masked], canvas[~masked])
        seen_t.append(t)
    t = torch.cat(seen_t)
    assert 1e-3 <= t.min() and t.max() <= 1 and 0.4 < t.mean() < 0.6
    _, _, t = mask_answers(canvas, gen_start, 3, 0.0 + 1e-3, gen, stratified=True)
    strata = ((t - 1e-3) / (1 - 1e-3) * len(prompts)).floor().long()
    assert sorted(strata.tolist()) == list(range(len(prompts)))  # one t per stratum


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_loss_reads_logits_at_the_right_offset(kind: str) -> None:
    """LLaDA predicts position i at output i; Dream at output i-1 (its AR heritage)."""
    model = _model(kind)
    prompts, answers = _batch()
    canvas, key_mask, positions, gen_start = training_canvas(model, prompts, answers, torch.device("cpu"))
    loss = diffusion_loss(model, canvas, key_mask, positions, gen_start, 1e-3, torch.Generator().manual_seed(5))
    noisy, masked, t = mask_answers(canvas, gen_start, 3, 1e-3, torch.Generator().manual_seed(5))
    logits = model(noisy, positions, key_mask)
    shift = 1 if kind == "dream" else 0
    assert model.logit_shift == bool(shift)
    pred = logits[:, gen_start - shift:canvas.shape[1] - shift]
    ce = F.cross_entropy(pred.transpose(1, 2), canvas[:, gen_start:], reduction="none")
    expected = (ce * masked[:, gen_start:] / t[:, None]).sum() / (len(prompts) * ANSWER_LENGTH)
    torch.testing.assert_close(loss, expected)
    mean = diffusion_loss(model, canvas, key_mask, positions, gen_start, 1e-3, torch.Generator().manual_seed(5),
                          weighting="mean")
    torch.testing.assert_close(mean, ce[masked[:, gen_start:]].mean())


def test_bad_config_is_a_one_line_error() -> None:
    for bad in (dict(kind="gpt"), dict(hidden=30, heads=4), dict(families=("copy", "nope")), dict(steps=0), dict(lr=0.0),
                dict(weighting="sqrt"), dict(mix_floor=-0.1)):
        with pytest.raises(DllmError) as err:
            validate(TrainConfig(**bad))
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_short_run_lowers_loss_and_writes_a_loadable_checkpoint(kind: str, tmp_path) -> None:
    cfg = TrainConfig(kind=kind, out=str(tmp_path / kind), steps=40, batch_size=16, lr=3e-3, warmup=5, hidden=32,
                      layers=1, heads=2, families=("copy",), eval_every=40, eval_per_family=2, train_pool=300,
                      threads=1, log_file=str(tmp_path / "log.txt"), buckets=1, weighting="mean", stratified_t=True)
    out = train_tiny(cfg)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    trained = dllm.load_model(out / "last", device="cpu")
    loaded_best = dllm.load_model(out, device="cpu")
    for m in (trained, loaded_best):
        assert m.kind == kind
        assert (m.special.mask, m.special.eos, m.special.pad) == (3, 2, 0)
        assert m.tokenizer.mask_token_id == 3 and m.tokenizer.eos_token_id == 2
    assert json.loads((out / "generation_config.json").read_text())["dllm"]["gen_length"] == ANSWER_LENGTH

    # Same init (seed) vs trained weights, on a fixed batch with fixed masks.
    init = _model(kind, seed=cfg.seed)
    exs = load_split("train", n_per_family=32, families=["copy"], seed=1)
    prompts = [TOK(e.prompt, add_special_tokens=False)["input_ids"] for e in exs]
    answers = [answer_ids(e.answer, TOK, 2) for e in exs]
    losses = []
    for m in (init, trained):
        c, k, p, s = training_canvas(m, prompts, answers, torch.device("cpu"))
        with torch.no_grad():
            losses.append(float(diffusion_loss(m, c, k, p, s, 1e-3, torch.Generator().manual_seed(0))))
    assert losses[1] < 0.7 * losses[0], losses
    out_gen = dllm.generate(trained, [e.prompt for e in exs[:2]], gen_length=ANSWER_LENGTH, block_length=ANSWER_LENGTH)
    assert len(out_gen.texts) == 2
