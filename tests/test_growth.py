"""Depth growth keeps a trained model's function exactly and then trains like any checkpoint."""

from __future__ import annotations

import pytest
import torch

import dllm
from dllm.errors import DllmError
from dllm.evals.synthetic import ANSWER_LENGTH, load_split
from dllm.models.loading import build_model, special_tokens
from dllm.training.diffusion import TrainConfig, model_config, train_tiny, validate
from dllm.training.growth import grow_layers, growth_order
from dllm.training.tokenizer import build_char_tokenizer

TOK = build_char_tokenizer()


def _model(kind: str, layers: int = 2) -> dllm.DiffusionLM:
    model = build_model(model_config(TrainConfig(kind=kind, hidden=32, layers=layers, heads=2), len(TOK)), seed=3)
    model.tokenizer = TOK
    model.special = special_tokens(model.config, TOK, "test")
    return model.eval()


def test_growth_order_interleaves_new_blocks() -> None:
    assert growth_order(4, 2) == [0, 1, None, 2, 3, None]
    assert growth_order(4, 1) == [0, 1, 2, 3, None]
    assert growth_order(3, 3) == [0, None, 1, None, 2, None]
    for bad in (0, 5):
        with pytest.raises(DllmError, match=str(bad)):
            growth_order(4, bad)


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_grown_model_has_more_blocks_and_identical_logits_and_decoding(kind: str) -> None:
    model = _model(kind)
    for block in model.parameters():  # non-trivial weights everywhere (zero-init biases included)
        block.data.add_(0.02 * torch.randn_like(block))
    grown = grow_layers(model, 2, seed=1)
    assert grown.num_layers == 4 and grown.kind == kind
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in model.parameters())
    prompts = [e.prompt for e in load_split("test", n_per_family=2, families=["copy", "gsm-mini"])]
    ids = TOK(prompts[0], add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids + [3] * 5])
    pos = torch.arange(x.shape[1])[None]
    with torch.no_grad():
        torch.testing.assert_close(grown(x, pos, None), model(x, pos, None), rtol=0, atol=0)
    a = dllm.generate(model, prompts, gen_length=ANSWER_LENGTH, block_length=ANSWER_LENGTH, steps=ANSWER_LENGTH)
    b = dllm.generate(grown, prompts, gen_length=ANSWER_LENGTH, block_length=ANSWER_LENGTH, steps=ANSWER_LENGTH)
    assert torch.equal(a.tokens, b.tokens)


def test_grown_blocks_learn_and_grown_checkpoint_round_trips(tmp_path) -> None:
    base = _model("llada", layers=1)
    base.save_pretrained(tmp_path / "base")
    cfg = TrainConfig(kind="llada", out=str(tmp_path / "grown"), steps=6, batch_size=8, lr=3e-3, warmup=1, hidden=32,
                      layers=2, heads=2, families=("copy",), eval_every=6, eval_per_family=2, train_pool=50, threads=1,
                      log_file=str(tmp_path / "log.txt"), buckets=1, weighting="mean", init_from=str(tmp_path / "base"),
                      grow_layers=1)
    out = train_tiny(cfg)
    last = dllm.load_model(out / "last", device="cpu")
    assert last.num_layers == 2
    new_out = dict(last.named_parameters())["model.transformer.blocks.1.attn_out.weight"]
    assert new_out.abs().sum() > 0  # started at zero, moved by training


def test_grow_layers_needs_a_checkpoint() -> None:
    with pytest.raises(DllmError, match="init_from"):
        validate(TrainConfig(grow_layers=2))
    with pytest.raises(DllmError, match="-1"):
        validate(TrainConfig(grow_layers=-1, init_from="x"))
