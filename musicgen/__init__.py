"""musicgen: an experiment framework for autoregressive symbolic music generation.

The Python API (``musicgen.api``)::

    import musicgen
    m = musicgen.load("outputs/demo/v7")   # a run directory, a .ckpt or an exported HF directory
    pieces = m.generate(n=2)               # Piece: .ids, .score (symusic.Score), .save("a.mid")

The names below are imported on first use, so ``import musicgen`` (and the command line) stays
light and nothing here runs before an entry point has set up its process.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_API = {"load": "musicgen.api", "MusicModel": "musicgen.api", "Piece": "musicgen.api",
        "RunMetadata": "musicgen.checkpoint.run", "SamplingConfig": "musicgen.generation.sampling"}
__all__ = ["MusicModel", "Piece", "RunMetadata", "SamplingConfig", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'musicgen' has no attribute {name!r}")
