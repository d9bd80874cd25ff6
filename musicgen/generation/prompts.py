"""Prompts for generation: the start token, the first bars of a MIDI file, or the openings of
whole pieces of one split of a run's data (never a transposed copy, never a window that starts
mid-piece)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from musicgen.checkpoint import LoadedRun, load_run_cache
from musicgen.constants import BOS_ID
from musicgen.errors import CheckpointError, ConfigError
from musicgen.midi_io import BadMidiError, read_score


def build_prompt(run: LoadedRun, cfg: DictConfig, rng: np.random.Generator) -> tuple[list[list[int]], str]:
    """Prompt ids per sample and a description of where they came from."""
    source = cfg.prompt.source
    n = cfg.num_samples
    if source == "none":
        return [[BOS_ID]] * n, "none (start token)"
    if source == "file":
        described = f"file {cfg.prompt.file} (first {cfg.prompt.bars} bars)"
        return [file_prompt(run, cfg.prompt.file, cfg.prompt.bars)] * n, described
    if source == "data":
        cache_path = Path(run.metadata.get("cache_path", ""))
        if not (cache_path / "meta.json").exists():
            raise CheckpointError(
                f"prompt.source=data needs the run's token cache at {cache_path}, which is missing; "
                "use prompt.source=none or prompt.source=file prompt.file=<a .mid>"
            )
        split = cfg.prompt.split
        splits = load_run_cache(run).splits
        if split not in splits or not len(splits[split].originals()):
            raise ConfigError(f"prompt.split={split}: the run's data has no pieces there; use train, val or test")
        pieces = splits[split]
        chosen = rng.choice(pieces.originals(), size=n, replace=len(pieces.originals()) < n)
        length = cfg.prompt.length
        prompts = [pieces.doc(i)[: 1 + length].astype(np.int64).tolist() for i in chosen]  # BOS + opening
        names = sorted({pieces.names[i] for i in chosen})
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return prompts, f"data: the first {length} tokens of {n} random {split} pieces ({shown})"
    raise ConfigError(f"prompt.source={source!r} must be one of data, file, none")


def read_prompt_file(path: str | None):
    """The score of ``prompt.file``, or a ``ConfigError`` saying why it cannot be a prompt."""
    if not path:
        raise ConfigError("prompt.source=file needs prompt.file=<path to a .mid file>")
    try:
        return read_score(path)
    except BadMidiError as e:
        raise ConfigError(f"prompt.file={e}; pass a MIDI file with notes") from e


def file_prompt(run: LoadedRun, path: str | None, bars: int) -> list[int]:
    """BOS + the first ``bars`` bars of a MIDI file, tokenised."""
    score = read_prompt_file(path)
    ts = score.time_signatures[0] if len(score.time_signatures) else None
    num, den = (ts.numerator, ts.denominator) if ts else (4, 4)
    bar_ticks = score.ticks_per_quarter * 4 * num // den
    clipped = score.clip(0, bar_ticks * bars, clip_end=True)
    ids = run.tokenizer.encode(clipped)
    if not ids:
        raise ConfigError(f"prompt.file={path}: its first {bars} bars hold no notes")
    return [BOS_ID, *ids]
