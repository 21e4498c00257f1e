"""Character tokenizer: HF round trip, special ids, chat template, and coverage of the synthetic suite."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from dllm.evals.synthetic import ANSWER_LENGTH, FAMILIES, load_split  # noqa: E402
from dllm.training.tokenizer import CHARACTERS, build_char_tokenizer, save_char_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    directory: Path = tmp_path_factory.mktemp("char_tok")
    save_char_tokenizer(directory)
    assert (directory / "tokenizer.json").exists() and (directory / "tokenizer_config.json").exists()
    return AutoTokenizer.from_pretrained(str(directory))


def test_loads_as_fast_tokenizer(tok: PreTrainedTokenizerFast) -> None:
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert 80 <= len(tok) <= 110
    assert len(tok) == len(build_char_tokenizer())


def test_special_ids(tok: PreTrainedTokenizerFast) -> None:
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == 0
    assert (tok.bos_token_id, tok.eos_token_id, tok.mask_token_id, tok.unk_token_id) == (1, 2, 3, 4)
    assert tok.mask_token == "<|mask|>"
    assert set(tok.all_special_ids) >= {0, 1, 2, 3, 4}
    assert tok("ab")["input_ids"] == tok.convert_tokens_to_ids(["a", "b"])  # no BOS/EOS added


def test_one_token_per_character(tok: PreTrainedTokenizerFast) -> None:
    ids = tok(CHARACTERS, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(CHARACTERS) == len(set(ids))
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == CHARACTERS


def test_special_tokens_in_text_and_unknown_chars(tok: PreTrainedTokenizerFast) -> None:
    ids = tok("a<|mask|><|mask|>b<|eos|><|pad|>", add_special_tokens=False)["input_ids"]
    assert ids[1:3] == [3, 3] and ids[4:] == [2, 0]
    assert tok.decode(ids, skip_special_tokens=True) == "ab"
    assert tok("a\u00e9~", add_special_tokens=False)["input_ids"][1:] == [4, 4]


def test_round_trip_every_synthetic_example(tok: PreTrainedTokenizerFast) -> None:
    examples = load_split("test", 100, seed=0) + load_split("train", 100, seed=0)
    assert {ex.family for ex in examples} == set(FAMILIES)
    for ex in examples:
        text = ex.prompt + ex.answer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text) and tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text
        answer_ids = tok(ex.answer, add_special_tokens=False)["input_ids"]
        assert len(answer_ids) + 1 <= ANSWER_LENGTH  # room for at least one EOS in the answer region


def test_round_trip_whitespace(tok: PreTrainedTokenizerFast) -> None:
    text = "  a  b\n\nc 'd' \"e\" (f) [g] <h> #$%_ "
    assert tok.decode(tok(text)["input_ids"]) == text


def test_chat_template(tok: PreTrainedTokenizerFast) -> None:
    msgs = [{"role": "user", "content": "add:12+3="}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|bos|>user: add:12+3=\nassistant: "
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "15"}], tokenize=False)
    assert full == "<|bos|>user: add:12+3=\nassistant: 15<|eos|>\n"
