"""``python -m musicgen.evaluate``: the same as ``musicgen evaluate`` (``musicgen.cli.evaluate``)."""

from musicgen.cli.evaluate import main

if __name__ == "__main__":
    main()
