"""Transposition augmentation for the training split.

Each training file gets up to ``copies`` transposed copies by distinct random non-zero
semitone offsets within +-``max_shift``. Offsets that would push any note outside the
tokeniser's pitch range are never drawn: another valid offset is picked instead, and a file
with fewer valid offsets than ``copies`` gets fewer copies (none if no offset fits). The draw
depends only on the file's relative path and the seed, like the split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from musicgen.data.split import hash_unit


@dataclass(frozen=True)
class AugmentConfig:
    copies: int = 2
    max_shift: int = 6

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise ValueError(f"data.augment.copies={self.copies} must be >= 0")
        if not 0 <= self.max_shift <= 24:
            raise ValueError(f"data.augment.max_shift={self.max_shift} must be in 0..24")


def transpositions(
    rel_path: str,
    lowest: int,
    highest: int,
    pitch_range: tuple[int, int],
    cfg: AugmentConfig,
    seed: int,
) -> list[int]:
    """Semitone offsets for the copies of one file whose notes span ``lowest..highest``."""
    lo, hi = pitch_range
    valid = [
        s
        for s in range(-cfg.max_shift, cfg.max_shift + 1)
        if s != 0 and lowest + s >= lo and highest + s <= hi
    ]
    rng = random.Random(int(hash_unit("augment:" + rel_path, seed) * 2**53))
    return rng.sample(valid, min(cfg.copies, len(valid)))
