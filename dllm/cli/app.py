"""``dllm`` entry point (also ``python -m dllm``). Each command lives in its own module and registers itself on
``app``.

Every way a user can get the command line wrong ends the same way: one ``error: ...`` line on stderr and exit
status 2, never a traceback. That covers ``DllmError`` from our own checks and the usage errors of the
argument parser (mistyped option, missing argument, a value of the wrong type). Ctrl-C anywhere prints one
``interrupted`` line and exits 130 (the shell convention, 128 + SIGINT). Warnings that dllm itself emits (e.g.
the result store dropping a half-written record) print as one ``warning: ...`` line each. Anything else is a bug
and keeps its traceback.

**Quirk**: typer >= 0.22 parses with its own bundled copy of click (``typer._click``) whose exception classes
are not click's, so both families are caught (older typer raises click's own).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from dllm.errors import DllmError

app = typer.Typer(
    name="dllm",
    help="Fast parallel decoding for masked diffusion language models (LLaDA, Dream).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

#: command modules; each defines functions decorated with ``@app.command``
COMMAND_MODULES = ("generate", "models", "train", "filter", "eval")

#: exit status of every user error (usage errors included), and of an interrupted run (128 + SIGINT)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _version_callback(value: bool) -> None:
    if value:
        from dllm import __version__

        typer.echo(f"dllm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the dllm version and exit."
    ),
) -> None:
    """Fast parallel decoding for masked diffusion language models (LLaDA, Dream)."""


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"dllm.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"dllm.cli.{name}":
                raise


def _parser_exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(ClickException, Abort, NoArgsIsHelpError) classes of every click copy that may be parsing: typer's
    bundled ``typer._click`` (typer >= 0.22) and click itself (older typer)."""
    exceptions, aborts, no_args = [], [], []
    for module in ("typer._click.exceptions", "click.exceptions", "typer.exceptions"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for found, name in ((exceptions, "ClickException"), (aborts, "Abort"), (no_args, "NoArgsIsHelpError")):
            cls = getattr(mod, name, None)
            if isinstance(cls, type) and cls not in found:
                found.append(cls)
    return tuple(exceptions), tuple(aborts), tuple(no_args)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def fail(message: str) -> None:
    """Print ``error: message`` as one line on stderr and exit 2."""
    err_console.print(f"[bold red]error:[/] {escape(_one_line(message))}", highlight=False, soft_wrap=True)
    sys.exit(EXIT_USAGE)


def _interrupted() -> None:
    err_console.print("interrupted", highlight=False, soft_wrap=True)
    sys.exit(EXIT_INTERRUPTED)


def _warning_printer(fallback: Any) -> Any:
    """A ``warnings.showwarning`` that prints dllm's own warnings as one ``warning:`` line and hands everybody
    else's to ``fallback`` (Python's own format, or whatever was installed before)."""

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if os.path.abspath(filename).startswith(_PACKAGE_DIR):
            err_console.print(f"[yellow]warning:[/] {escape(_one_line(str(message)))}", highlight=False, soft_wrap=True)
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def main(argv: list[str] | None = None) -> None:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); exits with the command's status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        args = ["--help"]  # bare ``dllm``: the help text, status 0
    exceptions, aborts, no_args = _parser_exception_types()
    previous_showwarning = warnings.showwarning
    warnings.showwarning = _warning_printer(previous_showwarning)
    try:
        _register()
        status = app(args=args, standalone_mode=False)
    except DllmError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit:
        raise
    except Exception as exc:
        if no_args and isinstance(exc, no_args):
            typer.echo(exc.ctx.get_help())  # type: ignore[attr-defined]
            sys.exit(0)
        if isinstance(exc, aborts):
            _interrupted()
        if isinstance(exc, exceptions):
            fail(exc.format_message())  # type: ignore[attr-defined]
        if isinstance(exc, OSError) and exc.filename is not None:
            # Last resort for a file the user named that a command did not check first; the commands' own
            # checks name the option too, this names the path and the reason.
            fail(f"cannot use {os.fsdecode(exc.filename)!r}: {exc.strerror or exc}")
        raise
    finally:
        warnings.showwarning = previous_showwarning
    # Non-standalone typer returns ``ctx.exit`` codes instead of raising; Ctrl-C arrives as 130.
    if isinstance(status, int) and not isinstance(status, bool) and status != 0:
        if status == EXIT_INTERRUPTED:
            _interrupted()
        sys.exit(status)


if __name__ == "__main__":
    # Run as ``python -m dllm.cli.app``: this file is then ``__main__``, a second copy whose ``app`` the command
    # modules never see; delegate to the imported module so both entry points share one app.
    from dllm.cli import app as _module

    _module.main()
