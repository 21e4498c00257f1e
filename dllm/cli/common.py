"""Helpers shared by CLI commands: model resolution, option parsing, prompt rendering."""

from __future__ import annotations

from typing import Any

from dllm.errors import DllmError


def default_model_path(name: str | None = None) -> str:
    """The shipped model used when ``--model`` is not given: ``name`` (a shipped checkpoint, e.g. a
    benchmark's ``default_model``), else the default tiny model."""
    from dllm.assets import DEFAULT_MODEL, asset_path

    return str(asset_path(name)) if name else str(DEFAULT_MODEL)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--option key=value`` pairs -> kwargs; values parsed as int, float, bool or kept as text."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise DllmError(f"--option {pair!r} must look like key=value")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise DllmError(f"--option {pair!r} has an empty key")
        out[key] = _parse_value(value.strip())
    return out


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def ensure_output_dir(path: str, option: str = "--out", create: bool = True) -> None:
    """A one-line error before any work, rather than a traceback after it, when ``path`` cannot be a writable
    output directory. With ``create`` the directory (and parents) is made now; without, nothing is written and the
    nearest existing ancestor is checked (``dllm eval`` leaves no file behind when a later check fails)."""
    import os
    from pathlib import Path

    if create:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise DllmError(f"{option} {path!r} cannot be used as an output directory: {exc.strerror or exc}") from None
        probe = Path(path)
    else:
        probe = Path(path).absolute()
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise DllmError(f"{option} {path!r} cannot be used as an output directory: {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DllmError(f"{option} {path!r} is not writable")


def ensure_appendable_file(path: str, option: str) -> None:
    """Open ``path`` for appending once (creating it), so a log file that cannot be written fails up front."""
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise DllmError(f"{option} {path!r} cannot be written: {exc.strerror or exc}") from None


def read_text_file(path: str, what: str) -> str:
    """A user-named text file as UTF-8 text; a missing, unreadable or non-UTF-8 file is a one-line error
    naming ``what`` and the path."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DllmError(f"{what} {path!r} does not exist") from None
    except OSError as exc:
        raise DllmError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DllmError(f"{what} {path!r} is not UTF-8 text: byte {raw[exc.start]:#04x} on line {line}") from None


def choices(kind: str) -> str:
    """The registered names of a plug-in kind for help texts (``policy``, ``cache``, ``block schedule``,
    ``benchmark``), read from the same registries that validate them."""
    if kind == "benchmark":
        from dllm.evals.bench import BENCHMARKS as registry
    elif kind == "cache":
        from dllm.cache import CACHES as registry
    else:
        from dllm.samplers.registry import POLICIES, SCHEDULES

        registry = POLICIES if kind == "policy" else SCHEDULES
    names = ", ".join(registry.names())
    also = getattr(registry, "also", None)  # presets, taken wherever a policy name is
    others = also.names() if also is not None else []
    return f"{names} (or a {also.kind}: {', '.join(others)})" if others else names

