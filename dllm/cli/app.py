"""``dllm`` entry point. Each command lives in its own module and registers itself on ``app``; user
errors (``DllmError``) print one red line and exit with status 2, never a traceback."""

from __future__ import annotations

import importlib
import sys

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


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"dllm.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"dllm.cli.{name}":
                raise


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except DllmError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.Abort):
            err_console.print("aborted")
            sys.exit(130)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    # Run as ``python -m dllm.cli.app``: this file is then ``__main__``, a second copy whose ``app`` the command
    # modules never see; delegate to the imported module so both entry points share one app.
    from dllm.cli import app as _module

    _module.main()
