"""``python -m musicgen.experiments.pearce2005``: as ``musicgen benchmark pearce2005``."""

from musicgen.experiments.pearce2005 import main

main()
