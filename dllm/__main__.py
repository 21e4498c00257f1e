"""``python -m dllm``: the same command line as the ``dllm`` script (useful where the script is not on PATH)."""

from dllm.cli.app import main

if __name__ == "__main__":
    main()
