"""The shipped checkpoints are real trained models: they load from the package and solve synthetic tasks.

Floors sit about 5 points under what was measured on exactly these examples (the first 20 test examples
per family, lowconf, one token per step) when the checkpoints were made (see dllm/assets/README.md), so a
broken loader, tokenizer, canvas layout, logit shift or decoding path fails here. Character accuracy
(position-wise matches against the answer + EOS region) is checked too: it moves long before exact match.
"""

from __future__ import annotations

import pytest
import torch

import dllm
from dllm.assets import DEFAULT_MODEL, asset_path
from dllm.evals.synthetic import ANSWER_LENGTH, load_split, score
from dllm.training.diffusion import answer_ids

#: name -> (kind, floor on exact match, floor on character accuracy), over 20 test examples per family
FLOORS = {"tiny-llada": ("llada", 0.94, 0.97), "tiny-dream": ("dream", 0.93, 0.97)}  # measured 0.99/0.999, 0.98/0.999


@pytest.fixture(scope="module")
def examples():
    return load_split("test", n_per_family=20)


def test_default_model_is_tiny_llada() -> None:
    assert DEFAULT_MODEL == asset_path("tiny-llada")


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_shipped_model_scores_above_floor(name: str, examples) -> None:
    torch.set_num_threads(2)
    kind, exact_floor, char_floor = FLOORS[name]
    model = dllm.load_model(asset_path(name), device="cpu")
    assert model.kind == kind
    assert (model.special.mask, model.special.eos, model.special.pad) == (3, 2, 0)
    assert model.generation_defaults.get("gen_length") == ANSWER_LENGTH
    exact, chars = [], []
    families = list(dict.fromkeys(ex.family for ex in examples))
    for fam in families:  # one family per batch, as the benchmark does
        exs = [ex for ex in examples if ex.family == fam]
        out = dllm.generate(model, [ex.prompt for ex in exs], policy="lowconf", gen_length=ANSWER_LENGTH,
                            block_length=ANSWER_LENGTH, steps=ANSWER_LENGTH, stop_at_eos=False)
        # one token per step: exactly ANSWER_LENGTH forwards without the EOS stop
        assert out.seq_nfe == [ANSWER_LENGTH] * len(exs)
        for ex, text, row in zip(exs, out.texts, out.tokens.tolist()):
            exact.append(score(ex, text))
            target = answer_ids(ex.answer, model.tokenizer, model.special.eos)
            chars.append(sum(a == b for a, b in zip(row, target)) / ANSWER_LENGTH)
    acc, char_acc = sum(exact) / len(exact), sum(chars) / len(chars)
    assert acc >= exact_floor, f"{name}: exact match {acc:.3f} < floor {exact_floor}"
    assert char_acc >= char_floor, f"{name}: character accuracy {char_acc:.3f} < floor {char_floor}"
