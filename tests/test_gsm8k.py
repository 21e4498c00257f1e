"""GSM8K prompt construction and lm-eval-compatible scoring."""

import json
from pathlib import Path

import pytest

from dllm.errors import DllmError
from dllm.evals import gsm8k

DATA = Path(__file__).resolve().parents[2] / "shared/data/gsm8k/test.jsonl"
needs_data = pytest.mark.skipif(not DATA.is_file(), reason=f"GSM8K test file not found at {DATA}")


@pytest.fixture(scope="module")
def docs():
    if not DATA.is_file():
        pytest.skip(f"GSM8K test file not found at {DATA}")
    return gsm8k.load_gsm8k(DATA)


# --- loading -------------------------------------------------------------------------------------------------------


def test_load_local_file(docs):
    assert len(docs) == 1319
    assert docs[0]["id"] == 0 and docs[-1]["id"] == 1318
    assert docs[0]["question"].startswith("Janet")
    assert gsm8k.reference_answer(docs[0]) == "18"


@needs_data
def test_limit():
    assert [d["id"] for d in gsm8k.load_gsm8k(DATA, limit=3)] == [0, 1, 2]
    with pytest.raises(DllmError, match="limit"):
        gsm8k.load_gsm8k(DATA, limit=0)


def test_load_errors(tmp_path):
    with pytest.raises(DllmError, match="does not exist"):
        gsm8k.load_gsm8k(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(DllmError, match="line 2"):
        gsm8k.load_gsm8k(bad)
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(DllmError, match="'answer'"):
        gsm8k.load_gsm8k(bad)


def test_unknown_hub_split_is_refused_before_any_download():
    with pytest.raises(DllmError, match="split"):
        gsm8k.load_gsm8k(None, split="validation")


# --- prompts -------------------------------------------------------------------------------------------------------


def test_prompt_format_matches_lm_eval():
    shots = [{"question": "1+1?", "answer": "1+1=2\n#### 2"}, {"question": "2+2?", "answer": "#### 4"}]
    doc = {"question": "3+3?", "answer": "#### 6"}
    assert gsm8k.build_prompt(doc, shots) == (
        "Question: 1+1?\nAnswer: 1+1=2\n#### 2\n\nQuestion: 2+2?\nAnswer: #### 4\n\nQuestion: 3+3?\nAnswer:"
    )
    assert gsm8k.build_prompt(doc) == "Question: 3+3?\nAnswer:"


def test_fewshot_from_same_file_never_contains_the_doc(docs):
    pool = gsm8k.load_fewshot_pool(DATA)
    for doc in docs[:200]:
        shots = gsm8k.select_fewshot(doc, pool, k=8)
        assert len(shots) == 8
        assert all(s["question"] != doc["question"] for s in shots)
        prompt = gsm8k.build_prompt(doc, shots)
        assert prompt.count(doc["question"]) == 1 and prompt.endswith(doc["question"] + "\nAnswer:")


def test_fewshot_excludes_doc_even_when_pool_is_tiny():
    pool = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(3)]
    for doc in pool:
        shots = gsm8k.select_fewshot(doc, pool, k=2)
        assert doc not in shots and len(shots) == 2
    with pytest.raises(DllmError, match="num_fewshot 3"):
        gsm8k.select_fewshot(pool[0], pool, k=3)


def test_fewshot_is_deterministic_and_varies_per_doc(docs):
    pool = docs
    a = gsm8k.select_fewshot(docs[5], pool, k=5)
    assert a == gsm8k.select_fewshot(docs[5], gsm8k.load_fewshot_pool(DATA), k=5)  # stable across loads
    assert a == gsm8k.select_fewshot(dict(docs[5], id=999), pool, k=5)  # independent of ids/order of the run
    assert a != gsm8k.select_fewshot(docs[6], pool, k=5)
    assert a != gsm8k.select_fewshot(docs[5], pool, k=5, seed=7)


def test_separate_fewshot_file(tmp_path, docs):
    shots_file = tmp_path / "train.jsonl"
    rows = [{"question": f"train {i}", "answer": f"#### {i}"} for i in range(6)]
    shots_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pool = gsm8k.load_fewshot_pool(DATA, fewshot_path=shots_file)
    shots = gsm8k.select_fewshot(docs[0], pool, k=5)
    assert all(s["question"].startswith("train ") for s in shots)


def test_chat_wraps_whole_prompt_as_one_user_message():
    seen = {}

    class FakeTokenizer:
        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            seen["messages"] = messages
            return "<|user|>" + messages[0]["content"] + "<|assistant|>"

    shots = [{"question": "1+1?", "answer": "#### 2"}]
    doc = {"question": "3+3?", "answer": "#### 6"}
    out = gsm8k.build_prompt(doc, shots, tokenizer=FakeTokenizer(), chat=True)
    assert seen["messages"] == [{"role": "user", "content": gsm8k.build_prompt(doc, shots)}]
    assert out.startswith("<|user|>Question: 1+1?")
    with pytest.raises(DllmError, match="tokenizer"):
        gsm8k.build_prompt(doc, shots, chat=True)


# --- post-processing and scoring -------------------------------------------------------------------------------------


def test_postprocess_cuts_at_first_stop_sequence():
    assert gsm8k.postprocess("So 5.\n#### 5\n\nQuestion: next one") == "So 5.\n#### 5\n\n"
    assert gsm8k.postprocess("#### 5<|im_end|>junk</s>") == "#### 5"
    assert gsm8k.postprocess("#### 5</s>Question:") == "#### 5"
    assert gsm8k.postprocess("no stop here") == "no stop here"


def test_extractors():
    text = "She has 3 apples and buys 1,200 more for $5.\n#### 1,203\nThe answer is 1203."
    assert gsm8k.extract_strict(text) == "1,203"
    assert gsm8k.extract_flexible(text) == "1203."
    assert gsm8k.extract_strict("The answer is 42") is None
    assert gsm8k.extract_flexible("The answer is 42") == "42"
    assert gsm8k.extract_flexible("no digits at all") is None
    assert gsm8k.extract_flexible("cost: $18") == "$18"
    assert gsm8k.extract_strict("#### -3") == "-3"


def test_normalize_matches_lm_eval():
    assert gsm8k.normalize("$1,234.") == "1234"
    assert gsm8k.normalize("work... #### 7") == "7"
    assert gsm8k.normalize("3.50") == "3.50"  # only one trailing dot is stripped, nothing else


@pytest.mark.parametrize(
    "completion, strict, flexible",
    [
        ("9 eggs * $2 = $18.\n#### 18", True, True),
        ("She makes 9 * 2 = $18 a day.", False, True),  # no "####": strict fails, flexible finds 18
        ("#### 18\nBut wait, 16 - 3 is 13, so 26.", True, False),  # flexible takes the last number
        ("#### $18.00", False, False),  # "18.00" != "18" under lm-eval's exact match
        ("#### 1,8", True, True),  # commas are removed before comparing
        ("#### 17", False, False),
        ("", False, False),
    ],
)
def test_score_strict_vs_flexible(completion, strict, flexible):
    doc = {"question": "Janet's ducks ...", "answer": "16 - 3 - 4 = 9\n9 * 2 = $18\n#### 18"}
    assert gsm8k.score(doc, completion) == {"strict_match": strict, "flexible_extract": flexible}


def test_gold_answers_score_perfectly(docs):
    # A completion that repeats the reference CoT must score on both filters (guards the normalisation).
    for doc in docs[:300]:
        assert gsm8k.score(doc, gsm8k.postprocess(doc["answer"])) == {"strict_match": True, "flexible_extract": True}
