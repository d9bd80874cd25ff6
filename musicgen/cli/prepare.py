"""Export the music21-embedded corpora to MIDI: ``python -m musicgen.prepare``.

Thin Hydra entry point; the work is ``musicgen.data.corpus.export_corpus``. Config:
``musicgen/conf/prepare.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from musicgen.data.corpus import export_corpus
from musicgen.data.sources import check_corpora
from musicgen.runtime import hydra_main

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig) -> dict[str, int]:
    """Export each corpus in ``cfg.corpora``; return the number of MIDI files of each."""
    check_corpora(cfg.corpora)
    counts = {}
    for name in cfg.corpora:
        manifest = export_corpus(
            name,
            Path(cfg.data_dir) / name,
            workers=cfg.workers,
            limit=cfg.limit,
            progress=cfg.progress,
            max_files=cfg.max_files,
            seed=cfg.seed,
        )
        counts[name] = len(manifest.files)
    return counts


@hydra_main("prepare")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
