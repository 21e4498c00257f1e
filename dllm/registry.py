"""One registry idiom for every kind of plug-in: policies, caches, block schedules, model kinds, benchmarks.

Each kind has one :class:`Registry`. An entry is registered with a decorator and **declares its options**::

    @POLICIES.register("threshold", "Fast-dLLM: commit every token with confidence >= threshold",
                       options=[Option("threshold", 0.9, "commit confidence", kind=float, low=0, low_open=True,
                                       high=1), TEMPERATURE])
    def threshold(threshold: float, temperature: float) -> Policy: ...

That one declaration is the source for validation (``Entry.validate``: unknown names and bad values are one-line
``DllmError``s naming the value and what is allowed), for ``dllm policies`` (names, defaults, allowed ranges,
help), for CLI help choice lists and for the docs. The factory receives every declared option, already checked
and normalised (``None`` from a caller means "the default").

Discovery: a registry names the package its built-in entries live in; the first lookup imports every module of
that package (those named in the package's ``LISTING_ORDER`` first, the rest alphabetically; entries list in
import order), so adding a plug-in is adding one file there. Installed third-party packages can add entries
through the entry-point group ``dllm.<kind>`` (e.g. ``dllm.policy``), whose targets are modules to import.

This module is the ground floor (it imports nothing of dllm but the error type), so every layer can use it.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from dllm.errors import DllmError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Option:
    """One declared option of a plug-in.

    ``kind`` is ``float``, ``int``, ``bool`` or ``str`` (values from a command line arrive as text and are
    converted), or ``None`` for values only ``parse`` understands. ``low``/``high`` bound numbers (open ends with
    ``low_open``/``high_open``); ``choices`` restricts values; ``nullable`` lets ``None`` through as a value
    meaning "off/unset" (otherwise ``None`` means "the default" and is replaced by it). ``parse(value)`` checks and
    normalises what the generic rules cannot (lists, regions, "block or N"); it raises ``DllmError`` itself and
    ``allowed`` then describes its accepted values for listings.
    """

    name: str
    default: Any
    help: str
    kind: type | None = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    parse: Callable[[Any], Any] | None = None
    allowed: str | None = None

    def allowed_text(self) -> str:
        """What values are allowed, for error messages and listings (e.g. ``(0, 1]``, ``lowconf|threshold``)."""
        if self.allowed is not None:
            return self.allowed
        if self.choices is not None:
            return "|".join(str(c) for c in self.choices)
        if self.kind is bool:
            return "true|false"
        if self.kind in (int, float):
            if self.low is None and self.high is None:
                text = "any integer" if self.kind is int else "any number"
            elif self.high is None:
                text = f"{'>' if self.low_open else '>='} {self.low:g}"
            elif self.low is None:
                text = f"{'<' if self.high_open else '<='} {self.high:g}"
            else:
                text = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            return text + (" (integer)" if self.kind is int and (self.low is not None or self.high is not None) else "")
        return "text" if self.kind is str else "see help"

    def check(self, value: Any) -> Any:
        """The normalised value, or a one-line ``DllmError`` naming the option, the value and what is allowed."""
        if value is None:
            if self.nullable:
                return None
            value = self.default
            if value is None:
                return None
        if self.parse is not None:
            return self.parse(value)
        v = self._convert(value)
        if self.choices is not None and v not in self.choices:
            raise DllmError(f"{self.name} {value!r} is not allowed; choose one of: {', '.join(map(str, self.choices))}")
        if self.kind in (int, float):
            lo_bad = self.low is not None and (v < self.low or (self.low_open and v == self.low))
            hi_bad = self.high is not None and (v > self.high or (self.high_open and v == self.high))
            if lo_bad or hi_bad:
                raise DllmError(f"{self.name} {value!r} is outside {self.allowed_text()}")
        return v

    def _convert(self, value: Any) -> Any:
        kind = self.kind
        if kind is None:
            return value
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            raise DllmError(f"{self.name} must be true or false, got {value!r}")
        if kind is str:
            if isinstance(value, str):
                return value
            raise DllmError(f"{self.name} must be text, got {value!r}")
        if isinstance(value, bool):
            raise DllmError(f"{self.name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if kind is int:
            try:
                f = float(value)
            except (TypeError, ValueError):
                raise DllmError(f"{self.name} must be an integer, got {value!r}") from None
            if not math.isfinite(f) or f != int(f):
                raise DllmError(f"{self.name} must be an integer, got {value!r}")
            return int(f)
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise DllmError(f"{self.name} must be a number, got {value!r}") from None
        if math.isnan(v):
            raise DllmError(f"{self.name} must be a number, got {value!r}")
        return v

    def describe(self) -> dict[str, Any]:
        """A plain description (for ``dllm policies --json`` and docs)."""
        return {"name": self.name, "default": self.default, "allowed": self.allowed_text(), "help": self.help}


@dataclass(frozen=True)
class Entry:
    """A registered plug-in: ``factory(*args, **options)`` builds it; ``options`` are its declared options."""

    kind: str
    name: str
    summary: str
    factory: Callable[..., Any]
    options: tuple[Option, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def option_names(self) -> list[str]:
        return [o.name for o in self.options]

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    def validate(self, given: Mapping[str, Any], *, fill_defaults: bool = True) -> dict[str, Any]:
        """Check ``given`` against the declared options: an unknown name is an error listing the allowed ones;
        each value goes through :meth:`Option.check`. With ``fill_defaults`` every declared option is returned
        (defaults for the ones not given)."""
        unknown = sorted(set(given) - set(self.option_names()))
        if unknown:
            allowed = ", ".join(self.option_names()) or "none"
            raise DllmError(f"unknown option {unknown[0]!r} for {self.kind} {self.name!r}; allowed: {allowed}")
        out: dict[str, Any] = {}
        for o in self.options:
            if o.name in given:
                out[o.name] = o.check(given[o.name])
            elif fill_defaults:
                out[o.name] = o.check(None)
        return out

    def build(self, *args: Any, **given: Any) -> Any:
        """Validate ``given`` and call the factory with every declared option."""
        return self.factory(*args, **self.validate(given))


class Registry:
    """Name -> :class:`Entry` for one kind of plug-in, with lazy discovery of the built-in package."""

    def __init__(self, kind: str, package: str | None = None, plural: str | None = None,
                 also: "Registry | None" = None) -> None:
        self.kind = kind
        self.plural = plural or kind + "s"
        self.package = package
        #: another registry whose names are accepted where this one's are (presets for policies): an unknown
        #: name's error lists them too
        self.also = also
        self._entries: dict[str, Entry] = {}
        self._loaded = package is None
        self._loading = False

    # --- registration ---------------------------------------------------------------------------------
    def add(self, name: str, summary: str, factory: Callable[..., Any], options: Sequence[Option] = (),
            **extra: Any) -> Entry:
        if name in self._entries and self._entries[name].factory is not factory:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        names = [o.name for o in options]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.kind} {name!r} declares an option twice: {names}")
        entry = Entry(self.kind, name, summary, factory, tuple(options), dict(extra))
        self._entries[name] = entry
        return entry

    def register(self, name: str, summary: str, options: Sequence[Option] = (), **extra: Any
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of :meth:`add`; returns the factory unchanged."""

        def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, summary, factory, options, **extra)
            return factory

        return wrap

    def remove(self, name: str) -> None:
        """Unregister (tests that register temporary entries clean up with this)."""
        self._entries.pop(name, None)

    # --- lookup ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True  # a module being imported may look entries up; it sees what is registered so far
        try:
            pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
            # modules named in LISTING_ORDER first (e.g. baselines before research), the rest alphabetically
            rank = {name: i for i, name in enumerate(getattr(pkg, "LISTING_ORDER", ()))}
            names = sorted((i.name for i in pkgutil.iter_modules(pkg.__path__) if not i.name.startswith("_")),
                           key=lambda n: (rank.get(n, len(rank)), n))
            for name in names:
                importlib.import_module(f"{self.package}.{name}")
        finally:
            self._loading = False
        self._loaded = True
        # list in that order too, whatever order the modules happened to be imported in before
        ordered = sorted(self._entries.values(),
                         key=lambda e: rank.get(getattr(e.factory, "__module__", "").rsplit(".", 1)[-1], len(rank)))
        self._entries = {e.name: e for e in ordered}
        from importlib.metadata import entry_points

        for ep in entry_points(group=f"dllm.{self.kind}"):
            try:
                importlib.import_module(ep.value.split(":")[0])
            except Exception as exc:  # noqa: BLE001 - a broken third-party plug-in must not break the built-in ones
                warnings.warn(f"{self.kind} plug-in {ep.name!r} ({ep.value}) failed to import and is skipped: "
                              f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)

    def get(self, name: str) -> Entry:
        self._load()
        if not isinstance(name, str) or name not in self._entries:
            others = list(self.also) if self.also is not None else []
            more = f" ({self.also.plural}: {', '.join(others)})" if others else ""
            raise DllmError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._entries)}{more}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def names(self) -> list[str]:
        return list(self)

    def entries(self) -> list[Entry]:
        self._load()
        return list(self._entries.values())

    def summaries(self) -> dict[str, str]:
        """Name -> one-line description."""
        return {e.name: e.summary for e in self.entries()}

    def build(self, name: str, *args: Any, **options: Any) -> Any:
        return self.get(name).build(*args, **options)


__all__ = ["Option", "Entry", "Registry"]
