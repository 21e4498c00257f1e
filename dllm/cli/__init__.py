"""The ``dllm`` command line (Typer + Rich)."""
