"""User-facing errors.

Every mistake a user can make (bad option, bad path, bad checkpoint) is raised as a ``DllmError`` with a
one-line message that names the bad value and what is allowed. The CLI prints the message and exits 2;
library users can catch it (it is a ``ValueError``).
"""

from __future__ import annotations


class DllmError(ValueError):
    """A clear, one-line error about user input."""


def check_choice(name: str, value: object, allowed: "list[str] | tuple[str, ...]") -> None:
    """Raise ``DllmError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise DllmError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
