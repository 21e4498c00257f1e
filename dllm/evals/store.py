"""Crash-safe, resumable per-sample results.

Full benchmark runs take hours; a crash, pre-emption or Ctrl-C must not lose finished samples, and a rerun must
neither redo them nor silently mix results produced with different settings. The file is JSON Lines:

* line 1 is a header ``{"_header": {"version": 1, "fingerprint": sha256, "config": {...}}}`` describing the run;
* every other line is one finished sample (a JSON object with a unique id field), written with one ``write``
  followed by ``flush`` and ``fsync``, so a sample is either fully on disk or it is the last, partial line.

On open, a last line that is incomplete (no trailing newline or not valid JSON: a crash mid-write) is dropped by
truncating the file back to the last good line, so that sample is simply recomputed. Damage anywhere else is not
a crash artefact and is refused. Reopening with a config whose fingerprint differs raises ``DllmError``. An
exclusive ``flock`` stops two processes from appending to the same file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from dllm.errors import DllmError

_HEADER_KEY = "_header"
_VERSION = 1


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """Stable hash of a run config (key order does not matter; non-JSON values hash by ``str``)."""
    blob = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _canonical(config: Mapping[str, Any]) -> Any:
    # Round-trip through JSON so the stored config and a fresh one compare equal (tuples -> lists, Path -> str).
    return json.loads(json.dumps(dict(config), sort_keys=True, default=str))


class ResultStore:
    """Append-only JSONL of per-sample results for one run config; see the module docstring for guarantees."""

    def __init__(self, path: str | os.PathLike, config: Mapping[str, Any] | None = None, id_key: str = "id") -> None:
        self.path = os.fspath(path)
        self.id_key = id_key
        self.config = _canonical(config or {})
        self.fingerprint = config_fingerprint(self.config)
        self._records: list[dict] = []
        self._ids: set = set()
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        if os.path.isdir(self.path):
            raise DllmError(f"results path {self.path!r} is a directory; pass a file path such as results.jsonl")
        self._file = open(self.path, "a+b")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise DllmError(f"results file {self.path!r} is in use by another run; wait for it or use another path") from None
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # -- reading -----------------------------------------------------------------------------------------------

    def _load(self) -> None:
        self._file.seek(0)
        data = self._file.read()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # tail is b"" when the file ends with a newline
        good_end = 0  # byte offset just past the last good line
        header_seen = False
        for lineno, raw in enumerate(complete, 1):
            is_last = lineno == len(complete) and not tail
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                if is_last:
                    self._drop_tail(good_end, f"line {lineno} is not valid JSON")
                    return self._finish_load(header_seen)
                raise DllmError(
                    f"results file {self.path!r} line {lineno} is corrupt ({exc}); fix or delete it"
                ) from exc
            if lineno == 1:
                if _HEADER_KEY not in obj:
                    raise DllmError(f"results file {self.path!r} has no run header; it was not written by ResultStore")
                self._check_header(obj[_HEADER_KEY])
                header_seen = True
            else:
                self._add(obj, where=f"line {lineno}")
            good_end += len(raw) + 1
        if tail:
            self._drop_tail(good_end, "the last line is incomplete")
        self._finish_load(header_seen)

    def _finish_load(self, header_seen: bool) -> None:
        self._file.seek(0, os.SEEK_END)
        if not header_seen:
            header = {_HEADER_KEY: {"version": _VERSION, "fingerprint": self.fingerprint, "config": self.config}}
            self._write_line(header)
            _fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def _drop_tail(self, good_end: int, why: str) -> None:
        warnings.warn(f"{self.path}: {why} (interrupted write); dropping it, that sample will be recomputed")
        self._file.truncate(good_end)
        self._file.flush()
        os.fsync(self._file.fileno())

    def _check_header(self, header: Any) -> None:
        if not isinstance(header, dict) or header.get("fingerprint") is None:
            raise DllmError(f"results file {self.path!r} has a malformed run header; delete it or use another path")
        if header["fingerprint"] == self.fingerprint:
            return
        old = header.get("config") or {}
        changed = sorted(k for k in set(old) | set(self.config) if old.get(k, _MISSING) != self.config.get(k, _MISSING))
        diff = ", ".join(f"{k}: {old.get(k, '<unset>')!r} -> {self.config.get(k, '<unset>')!r}" for k in changed)
        raise DllmError(
            f"results file {self.path!r} was written with a different run config ({diff or 'fingerprint differs'}); "
            "use a new output path or delete the file"
        )

    def _check_new(self, record: dict, where: str) -> None:
        if self.id_key not in record:
            raise DllmError(f"result record ({where}) has no {self.id_key!r} field; every sample needs an id")
        if record[self.id_key] in self._ids:
            raise DllmError(
                f"sample id {record[self.id_key]!r} ({where}) is already stored in {self.path!r}; ids must be unique"
            )

    def _add(self, record: dict, where: str) -> None:
        self._check_new(record, where)
        self._ids.add(record[self.id_key])
        self._records.append(record)

    # -- public API ----------------------------------------------------------------------------------------------

    def done_ids(self) -> set:
        """Ids of samples already on disk (skip these on a rerun)."""
        return set(self._ids)

    def records(self) -> list[dict]:
        """All stored sample records, in the order they were written."""
        return list(self._records)

    def append(self, record: Mapping[str, Any]) -> None:
        """Durably add one finished sample (must carry a new, unique id)."""
        if self._file.closed:
            raise DllmError(f"results file {self.path!r} is closed; open a new ResultStore to add results")
        record = dict(record)
        try:
            line = json.dumps(record, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise DllmError(f"result record {record.get(self.id_key)!r} is not JSON-serialisable: {exc}") from exc
        self._check_new(record, where="new record")
        self._file.write(line.encode("utf-8") + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._add(record, where="new record")  # only once it is on disk

    def _write_line(self, obj: dict) -> None:
        self._file.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._ids

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records())

    def close(self) -> None:
        """Release the file (and its lock)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_MISSING = object()


def _fsync_dir(path: str) -> None:
    """Make a newly created file's directory entry durable too."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
