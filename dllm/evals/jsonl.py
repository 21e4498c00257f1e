"""Reading a user's JSONL data file (``.jsonl`` or gzipped ``.jsonl.gz``) with one-line errors.

Benchmarks read their own record schema on top: :func:`read_objects` guarantees only that every non-blank line
is a JSON object, and says which file, line and byte is wrong when one is not.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib

from dllm.errors import DllmError


def read_objects(path: str | os.PathLike, what: str, expected: str = "") -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of ``path``. ``what`` names the data in messages (e.g.
    ``"HumanEval"``); ``expected`` describes the object for the not-an-object error (e.g. ``"with task_id,
    prompt"``). A missing or unreadable file, a broken gzip stream, bytes that are not UTF-8, a line that is not
    JSON or not a JSON object: each is a one-line ``DllmError`` naming the file (and the line)."""
    file = os.fspath(path)
    if not os.path.isfile(file):
        raise DllmError(f"{what} file {file!r} does not exist")
    try:
        with (gzip.open if file.endswith(".gz") else open)(file, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DllmError(f"cannot read {what} file {file!r}: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = raw.count(b"\n", 0, exc.start) + 1
        raise DllmError(f"{what} file {file!r} is not UTF-8 text: byte {raw[exc.start]:#04x} on line {lineno}") from None
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DllmError(f"{what} file {file!r}: line {lineno} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DllmError(f"{what} file {file!r}: line {lineno} is a JSON {type(record).__name__}, "
                            f"expected an object{' ' + expected if expected else ''}")
        out.append((lineno, record))
    return out


__all__ = ["read_objects"]
