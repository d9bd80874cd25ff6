"""``python -m musicgen.train``: the same as ``musicgen train`` (``musicgen.cli.train``)."""

from musicgen.cli.train import main

if __name__ == "__main__":
    main()
