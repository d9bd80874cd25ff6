"""``python -m musicgen.generate``: the same as ``musicgen generate`` (``musicgen.cli.generate``)."""

from musicgen.cli.generate import main

if __name__ == "__main__":
    main()
