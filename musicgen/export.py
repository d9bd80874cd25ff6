"""``python -m musicgen.export``: the same as ``musicgen export`` (``musicgen.cli.export``)."""

from musicgen.cli.export import main

if __name__ == "__main__":
    main()
