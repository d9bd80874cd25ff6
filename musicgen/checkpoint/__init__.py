"""Checkpoints: loading a trained run back (``load_run``: a run directory, a ``.ckpt`` or an exported
Hugging Face directory), the provenance that ties a checkpoint to its tokeniser, data split and
config (``provenance``), and the Hugging Face format both ways (``hf``).

Every checkpoint records ``provenance``: the sha256 of its tokeniser file, of its split (which
files are in train / val / test) and of the resolved config, plus the split's file lists. A
resume or a generation whose tokeniser or split differs is refused with a message naming what
differs (``ProvenanceError``), never silently trained or sampled on mismatched ids.
"""

from __future__ import annotations

from pathlib import Path

import torch

from musicgen.checkpoint.hf import is_export_dir, load_export
from musicgen.checkpoint.run import LoadedRun, find_checkpoint, load_checkpoint, load_run_cache, read_metadata

__all__ = ["LoadedRun", "find_checkpoint", "load_checkpoint", "load_run", "load_run_cache", "read_metadata"]


def load_run(path: Path | str, map_location: str | torch.device = "cpu") -> LoadedRun:
    """The network, tokeniser and metadata of a run directory (its best checkpoint, else its last),
    a ``.ckpt`` file, or a Hugging Face directory written by ``musicgen export``."""
    if is_export_dir(path):
        return load_export(path)
    return load_checkpoint(path, map_location)
