"""Workload generators (GSM8K-format, HumanEval-format, dependency families), shipped files, subword tokenizer."""

import json
import re
import sys
from pathlib import Path

import pytest

from dllm.errors import DllmError
from dllm.evals import generators as wl
from dllm.evals import gsm8k, humaneval
from dllm.evals.generators import gsm8k_format, humaneval_format
from dllm.evals.generators.dependency import FAMILIES as DEPENDENCY_FAMILIES

ROOT = Path(__file__).resolve().parents[1]


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gsm_test_meta():
    return wl.gsm8k_problems("test", wl.GSM8K_TEST_SIZE, wl.SEED, with_meta=True)


@pytest.fixture(scope="module")
def gsm_train_meta():
    return wl.gsm8k_problems("train", 4000, wl.SEED, with_meta=True)


@pytest.fixture(scope="module")
def he_test_meta():
    return wl.humaneval_problems("test", wl.HUMANEVAL_TEST_SIZE, wl.SEED, with_meta=True)


@pytest.fixture(scope="module")
def he_train_meta():
    return wl.humaneval_problems("train", 1000, wl.SEED, with_meta=True)


# --- determinism --------------------------------------------------------------------------------------------------


def test_generators_are_deterministic_per_seed_and_prefix_stable():
    assert wl.gsm8k_problems("train", 50, 3) == wl.gsm8k_problems("train", 50, 3)
    assert wl.gsm8k_problems("train", 50, 3) != wl.gsm8k_problems("train", 50, 4)
    assert wl.gsm8k_problems("test", 80, 3)[:30] == wl.gsm8k_problems("test", 30, 3)
    assert wl.humaneval_problems("test", 40, 3) == wl.humaneval_problems("test", 40, 3)
    assert wl.humaneval_problems("test", 40, 3) != wl.humaneval_problems("test", 40, 4)
    assert wl.humaneval_problems("train", 60, 3)[:20] == wl.humaneval_problems("train", 20, 3)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(DllmError, match="unknown split 'dev'"):
        wl.gsm8k_problems("dev", 3)
    with pytest.raises(DllmError, match="non-negative integer"):
        wl.humaneval_problems("train", -1)


def test_shipped_files_equal_a_regeneration_with_the_documented_seed():
    assert _read(wl.GSM8K_TEST) == wl.gsm8k_problems("test", wl.GSM8K_TEST_SIZE, wl.SEED)
    assert _read(wl.GSM8K_FEWSHOT) == wl.gsm8k_problems("train", wl.GSM8K_FEWSHOT_SIZE, wl.SEED)
    assert _read(wl.HUMANEVAL_TEST) == wl.humaneval_problems("test", wl.HUMANEVAL_TEST_SIZE, wl.SEED)
    assert len(_read(wl.GSM8K_TEST)) == 500 and len(_read(wl.HUMANEVAL_TEST)) == 200
    total = sum(p.stat().st_size for p in wl.WORKLOAD_DIR.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024


@pytest.mark.slow
def test_make_workload_check_passes_including_the_tokenizer():
    """The script's own --check (retrains the tokenizer, ~20 s): byte-equal files, tokenizer included."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_workload
    finally:
        sys.path.pop(0)
    assert make_workload.check(wl.SEED) == 0


# --- GSM8K format -------------------------------------------------------------------------------------------------


def test_gsm8k_records_have_gsm8k_schema_and_layout():
    docs = _read(wl.GSM8K_TEST)
    assert all(set(d) == {"question", "answer"} for d in docs)
    for d in docs:
        lines = d["answer"].split("\n")
        assert re.fullmatch(r"#### \d+", lines[-1])
        steps = lines[:-1]
        assert gsm8k_format.MIN_STEPS <= len(steps) <= gsm8k_format.MAX_STEPS
        assert all(len(re.findall(r"<<[^>]*>>", s)) == 1 for s in steps)
    assert len(gsm8k_format.TEMPLATES) >= 20


def test_every_calculator_annotation_is_exact_and_the_last_one_is_the_answer():
    """Recomputed independently with Python integers: ``/`` must divide exactly, nothing negative."""
    for d in _read(wl.GSM8K_TEST) + _read(wl.GSM8K_FEWSHOT):
        last = None
        for expr, annotated, shown in re.findall(r"<<([0-9+\-*/]+)=(\d+)>>(\d+)", d["answer"]):
            value = eval(expr.replace("/", "//"))  # noqa: S307 - digits and operators only (regex above)
            assert eval(expr) == value  # true division agrees: no remainder anywhere in the line
            assert value >= 0 and int(annotated) == value and int(shown) == value
            for sub in re.findall(r"\d+/\d+", expr):
                a, b = map(int, sub.split("/"))
                assert a % b == 0
            last = value
        assert d["answer"].endswith(f"#### {last}")


def test_harness_scores_gold_answers_100_and_corrupted_answers_0():
    docs = gsm8k.load_gsm8k(wl.GSM8K_TEST)
    for d in docs:
        assert gsm8k.score(d, d["answer"]) == {"strict_match": True, "flexible_extract": True}
        final = int(d["answer"].rsplit("#### ", 1)[1])
        corrupted = d["answer"].rsplit("#### ", 1)[0] + f"#### {final + 1}"
        assert gsm8k.score(d, corrupted) == {"strict_match": False, "flexible_extract": False}


def test_gsm8k_test_split_holds_out_templates_and_number_ranges(gsm_test_meta, gsm_train_meta):
    train_templates = {r["meta"]["template"] for r in gsm_train_meta}
    assert not train_templates & set(gsm8k_format.TEST_TEMPLATES)
    test_templates = {r["meta"]["template"] for r in gsm_test_meta}
    assert set(gsm8k_format.TEST_TEMPLATES) <= test_templates  # every held-out template is in the test split
    held = sum(r["meta"]["template_split"] == "test" for r in gsm_test_meta)
    assert 0.35 * len(gsm_test_meta) < held < 0.65 * len(gsm_test_meta)
    for records, split in ((gsm_train_meta, "train"), (gsm_test_meta, "test")):
        for r in records:
            wide = [(lo, hi, v) for lo, hi, v in r["meta"]["slots"].values() if hi - lo + 1 >= gsm8k_format.WIDE_SLOT]
            assert wide, r["meta"]["template"]  # every problem has a held-out-able number
            for lo, hi, v in wide:
                cut = lo + (hi - lo + 1) * 3 // 4
                assert (v >= cut) == (split == "test"), (r["meta"], v, cut)


def test_gsm8k_train_and_test_share_no_question(gsm_test_meta, gsm_train_meta):
    assert not {r["question"] for r in gsm_test_meta} & {r["question"] for r in gsm_train_meta}
    fewshot = {d["question"] for d in _read(wl.GSM8K_FEWSHOT)}
    assert not fewshot & {r["question"] for r in gsm_test_meta}


def test_fewshot_pool_builds_five_shot_prompts_in_gsm8k_layout():
    pool = gsm8k.load_fewshot_pool(fewshot_path=wl.GSM8K_FEWSHOT)
    doc = gsm8k.load_gsm8k(wl.GSM8K_TEST, limit=1)[0]
    prompt = gsm8k.build_prompt(doc, gsm8k.select_fewshot(doc, pool, 5))
    assert prompt.count("Question: ") == 6 and prompt.count("#### ") == 5 and prompt.endswith("Answer:")


# --- HumanEval format ---------------------------------------------------------------------------------------------


def test_humaneval_records_have_the_humaneval_layout():
    problems = humaneval.load_humaneval(wl.HUMANEVAL_TEST)
    assert len(humaneval_format.FAMILIES) >= 25
    for p in problems:
        assert set(p) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
        assert re.fullmatch(r"SynthEval/\d+", p["task_id"])
        assert f"def {p['entry_point']}(" in p["prompt"] and ">>> " in p["prompt"] and p["prompt"].endswith('"""\n')
        assert p["canonical_solution"].startswith("    ") and "def " not in p["canonical_solution"]
        assert p["test"].startswith("\n\ndef check(candidate):\n")
        assert p["test"].count("    assert ") >= humaneval_format.MIN_ASSERTS


def test_harness_passes_canonical_solutions_and_fails_corrupted_ones():
    problems = humaneval.load_humaneval(wl.HUMANEVAL_TEST)
    sample = problems[:: len(problems) // 20][:20]  # spread over the file (families rotate along the ids)
    for p in sample:
        assert humaneval.score(p, p["canonical_solution"])["passed"], p["task_id"]
        assert not humaneval.score(p, "    return None\n")["passed"], p["task_id"]


def test_humaneval_test_split_holds_out_names_phrasings_constants_and_variants(he_test_meta, he_train_meta):
    """Recorded names/phrasings/constants must come from the split's own part of each pool."""
    families = humaneval_format.all_families()
    for records, split in ((he_train_meta, "train"), (he_test_meta, "test")):
        for r in records:
            meta = r["meta"]
            assert meta["phrasing"] % 3 == 2 if split == "test" else meta["phrasing"] % 3 != 2
            for k, v in meta.get("consts", {}).items():
                assert v in _pool_part(families[meta["family"]], split, k), (meta, k)
            assert meta["name"] == r["entry_point"]
            if split == "train":
                assert not meta.get("variant_held_out", False)
    test_names = {r["meta"]["name"] for r in he_test_meta}
    assert not test_names & {r["meta"]["name"] for r in he_train_meta}
    assert any(r["meta"].get("variant_held_out") for r in he_test_meta)
    assert not {r["prompt"] for r in he_test_meta} & {r["prompt"] for r in he_train_meta}


def _pool_part(family, split, key):
    """Replay the family with a recording Gen to learn the option list behind constant ``key``."""
    seen = {}

    class Recorder(humaneval_format.Gen):
        def const(self, k, options):
            seen[k] = list(options)
            return super().const(k, options)

    import random

    for seed in range(200):  # some constants exist only in some variants
        family(Recorder(random.Random(seed), split, {}))
        if key in seen:
            return humaneval_format.held_out(seen[key], split)
    return []


# --- dependency families ------------------------------------------------------------------------------------------


def test_dependency_problems_are_in_the_test_split_and_accept_any_valid_answer(he_test_meta):
    dep = [r for r in he_test_meta if r["meta"]["family"] in DEPENDENCY_FAMILIES]
    assert {r["meta"]["family"] for r in dep} == set(DEPENDENCY_FAMILIES)
    shipped = {p["task_id"]: p for p in humaneval.load_humaneval(wl.HUMANEVAL_TEST)}
    for r in dep[:: max(1, len(dep) // 6)]:
        p = shipped[r["task_id"]]
        literal = eval(p["canonical_solution"].strip()[len("return "):])  # noqa: S307 - our own literal
        assert humaneval.score(p, p["canonical_solution"])["passed"]
        other = literal[::-1] if isinstance(literal, list) else None
        if other is not None:  # another order of the same parts: also right
            assert humaneval.score(p, f"    return {other!r}\n")["passed"]
            # what committing two positions from the same marginal does: a repeated part
            dup = [literal[0]] * 2 + literal[2:]
            assert not humaneval.score(p, f"    return {dup!r}\n")["passed"]


def test_dependency_canonical_answers_are_random_valid_answers_not_one_canonical_form():
    """The literal is a random valid answer (random subset, random order), like shuffle's ``answer``: that is
    what teaches a model the spread marginals. Sorted or first-n answers would make the task unique-answer."""
    lists = []
    for r in wl.humaneval_problems("train", 600, 0, with_meta=True):
        if r["meta"]["family"] in DEPENDENCY_FAMILIES:
            value = eval(r["canonical_solution"].strip()[len("return "):])  # noqa: S307 - our own literal
            if isinstance(value, list):
                lists.append(value)
    assert len(lists) > 30
    assert sum(v == sorted(v) for v in lists) < 0.4 * len(lists)  # random order: sorted with chance <= 1/6


# --- subword tokenizer --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(wl.TOKENIZER_DIR))


def test_tokenizer_specials_match_what_the_loader_looks_up(tok):
    from dllm.models.loading import special_tokens
    from dllm.training import subword

    special = special_tokens({}, tok, "workload")
    assert tok.convert_ids_to_tokens([special.mask, special.eos, special.pad, special.bos, special.eot]) == [
        subword.MASK_TOKEN, subword.EOS_TOKEN, subword.PAD_TOKEN, subword.BOS_TOKEN, subword.EOT_TOKEN]
    assert 2000 <= len(tok) <= 4096


def test_tokenizer_chat_template_is_llada_instruct_style(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<|eot_id|>") in ids and ids[0] == tok.bos_token_id


def test_tokenizer_round_trips_code_and_numbers(tok):
    code = humaneval.load_humaneval(wl.HUMANEVAL_TEST, limit=3)
    texts = [p["prompt"] + p["canonical_solution"] for p in code] + [
        "def f(x):\n\tif x >= 10:\n        return [1, 22, 333]\n\n\n    return -4096.5  # done\n",
        "48/2 = <<48/2=24>>24\n#### 1234567890", "  leading and trailing  ", "émoji ✓ 🙂 bytes",
    ]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    digits = tok.convert_ids_to_tokens(tok("1234567890", add_special_tokens=False)["input_ids"])
    assert digits == list("1234567890")  # one token per digit


def test_answers_fit_llada_answer_lengths(tok):
    """The point of the workload: answers of tens to ~150 tokens, not 16."""
    lengths = [len(tok(d["answer"], add_special_tokens=False)["input_ids"]) for d in _read(wl.GSM8K_TEST)]
    assert 40 <= sum(lengths) / len(lengths) <= 150 and max(lengths) <= 200


def test_train_bpe_rejects_a_vocab_too_small_for_the_bytes():
    from dllm.training.subword import train_bpe

    with pytest.raises(DllmError, match="vocab_size must be an integer above 263"):
        train_bpe(["abc"], vocab_size=100)
