"""Prompts for generation: the first bars of a MIDI file (or score), tokenised after the start token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import symusic

from musicgen.constants import BOS_ID
from musicgen.errors import ConfigError
from musicgen.midi_io import BadMidiError, read_score


def read_prompt_file(path: str | Path | None) -> symusic.Score:
    """The score of a prompt file, or a ``ConfigError`` saying why it cannot be a prompt."""
    if not path:
        raise ConfigError("prompt.source=file needs prompt.file=<path to a .mid file>")
    try:
        return read_score(path)
    except BadMidiError as e:
        raise ConfigError(f"prompt.file={e}; pass a MIDI file with notes") from e


def file_prompt(tokenizer: Any, source: str | Path | symusic.Score, bars: int) -> list[int]:
    """BOS + the first ``bars`` bars of a MIDI file (or a score), tokenised."""
    score = read_prompt_file(source) if isinstance(source, (str, Path)) else source
    ts = score.time_signatures[0] if len(score.time_signatures) else None
    num, den = (ts.numerator, ts.denominator) if ts else (4, 4)
    bar_ticks = score.ticks_per_quarter * 4 * num // den
    clipped = score.clip(0, bar_ticks * bars, clip_end=True)
    ids = tokenizer.encode(clipped)
    if not ids:
        where = source if isinstance(source, (str, Path)) else "the prompt"
        raise ConfigError(f"prompt.file={where}: its first {bars} bars hold no notes")
    return [BOS_ID, *ids]
