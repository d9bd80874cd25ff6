"""``python -m musicgen.prepare``: the same as ``musicgen prepare`` (``musicgen.cli.prepare``)."""

from musicgen.cli.prepare import main

if __name__ == "__main__":
    main()
