"""The shipped checkpoints are real trained models: they load from the package and solve synthetic tasks.

Floors sit about 5 points under what was measured on exactly these examples (the first 20 test examples
per family, lowconf, one token per step) when the checkpoints were made (see dllm/assets/README.md), so a
broken loader, tokenizer, canvas layout, logit shift or decoding path fails here. Character accuracy
(position-wise matches against the answer + EOS region, on the unique-answer families: a ``shuffle`` answer
may rightly differ from the stored one at every position) is checked too: it moves long before exact match.
"""

from __future__ import annotations

import pytest
import torch

import dllm
from dllm.assets import DEFAULT_MODEL, asset_path
from dllm.evals.synthetic import ANSWER_LENGTH, MULTI_ANSWER_FAMILIES, load_split, score
from dllm.training.diffusion import answer_ids

#: name -> (kind, floor on exact match, floor on character accuracy), over 20 test examples per family
FLOORS = {"tiny-llada": ("llada", 0.95, 0.97), "tiny-dream": ("dream", 0.92, 0.97)}  # measured 1.00/1.00, 0.975/0.998


@pytest.fixture(scope="module")
def examples():
    return load_split("test", n_per_family=20)


def test_default_model_is_shipped() -> None:
    """What `dllm generate` loads without --model is the shipped tiny LLaDA checkpoint, present and loadable."""
    from dllm.cli.common import default_model_path

    assert default_model_path() == str(DEFAULT_MODEL) == str(asset_path("tiny-llada"))  # asset_path: it exists
    model = dllm.load_model(default_model_path(), device="cpu")
    assert model.kind == "llada" and model.tokenizer is not None


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
            if fam in MULTI_ANSWER_FAMILIES:
                continue
            target = answer_ids(ex.answer, model.tokenizer, model.special.eos)
            chars.append(sum(a == b for a, b in zip(row, target)) / ANSWER_LENGTH)
    acc, char_acc = sum(exact) / len(exact), sum(chars) / len(chars)
    assert acc >= exact_floor, f"{name}: exact match {acc:.3f} < floor {exact_floor}"
    assert char_acc >= char_floor, f"{name}: character accuracy {char_acc:.3f} < floor {char_floor}"


def test_parallel_decoding_costs_accuracy_only_on_shuffle() -> None:
    """The suite's point: on the shipped model, several fixed tokens per step break the multi-answer family
    (positions committed together repeat a character) and leave a unique-answer one solved, while a confidence
    threshold adapts (measured on these 20 + 20 examples: shuffle 0% at 4 tokens/step, 100% at threshold 0.9
    with ~7 forwards; copy 100% in 4 forwards)."""
    torch.set_num_threads(2)
    model = dllm.load_model(DEFAULT_MODEL, device="cpu")
    kw = dict(gen_length=ANSWER_LENGTH, block_length=ANSWER_LENGTH)

    def run(family: str, **options):
        exs = load_split("test", n_per_family=20, families=[family])
        out = dllm.generate(model, [ex.prompt for ex in exs], **kw, **options)
        return sum(score(ex, t) for ex, t in zip(exs, out.texts)) / len(exs), sum(out.seq_nfe) / len(exs)

    shuffle_fixed, _ = run("shuffle", policy="lowconf", steps=4)
    shuffle_thr, shuffle_thr_nfe = run("shuffle", policy="threshold", threshold=0.9)
    copy_fixed, _ = run("copy", policy="lowconf", steps=4)
    assert shuffle_fixed <= 0.3, shuffle_fixed
    assert shuffle_thr >= 0.9 and shuffle_thr_nfe > 4, (shuffle_thr, shuffle_thr_nfe)
    assert copy_fixed >= 0.9, copy_fixed
