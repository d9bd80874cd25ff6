"""Reading MIDI for every part of musicgen: one place that decides what counts as usable input.

All non-drum tracks are merged into one piano track (notes at one onset then form a chord);
drum tracks are dropped. Anything unusable raises ``BadMidiError`` with a one-line reason,
so callers can skip the file with a warning and count it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import symusic

from musicgen.fs import atomic_path


class BadMidiError(ValueError):
    """A file that cannot be used as MIDI input (unreadable, empty, drums only, no notes...)."""


def read_score(path: Path | str) -> symusic.Score:
    """The file's score with all non-drum tracks merged into one track (program 0).

    Raises ``BadMidiError`` for zero-byte, truncated, non-MIDI, drums-only and note-less files,
    for SMPTE time division (frames per second, not ticks per quarter note) and for format 2
    files with several tracks (independent sequences, which merging would play at once).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BadMidiError(f"{path}: cannot read ({e.strerror})") from e
    if size == 0:
        raise BadMidiError(f"{path}: empty file (0 bytes)")
    with open(path, "rb") as f:
        header = f.read(14)
    if header[:4] != b"MThd":
        raise BadMidiError(f"{path}: not a MIDI file (no MThd header)")
    if len(header) == 14:
        fmt, n_tracks, division = struct.unpack(">HHh", header[8:14])
        if division < 0:  # high bit set: -frames per second, ticks per frame
            raise BadMidiError(
                f"{path}: SMPTE time division ({-(division >> 8)} fps x {division & 0xFF} ticks per frame) "
                "is not supported; re-save it with ticks per quarter note"
            )
        if fmt == 2 and n_tracks > 1:
            raise BadMidiError(
                f"{path}: MIDI format 2 ({n_tracks} independent sequences) is not supported; "
                "convert it to format 0 or 1"
            )
    truncated = _truncated_chunk(path, size)
    if truncated:
        raise BadMidiError(f"{path}: unreadable MIDI (truncated: {truncated})")
    try:
        score = symusic.Score(str(path))
    except Exception as e:  # symusic raises RuntimeError/ValueError with parser messages
        raise BadMidiError(f"{path}: unreadable MIDI ({e})") from e
    return merge_tracks(score, source=str(path))


def _truncated_chunk(path: Path, size: int) -> str | None:
    """Where a chunk (``MThd``, ``MTrk``, ...) declares more bytes than the file holds, what is
    missing; None for a file whose chunks all fit. Checked here because symusic 0.5 does not
    always notice: it can read past the end of a truncated buffer and return a score."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 8 <= size:
        kind, length = data[pos : pos + 4], struct.unpack(">I", data[pos + 4 : pos + 8])[0]
        if pos + 8 + length > size:
            return f"chunk {kind.decode('latin-1')!r} at byte {pos} declares {length} bytes, {size - pos - 8} remain"
        pos += 8 + length
    return None


def merge_tracks(score: symusic.Score, source: str = "score") -> symusic.Score:
    """A copy of ``score`` whose non-drum notes are all in one sorted track."""
    tracks = [t for t in score.tracks if not t.is_drum]
    n_notes = sum(len(t.notes) for t in tracks)
    if n_notes == 0:
        reason = "drums only" if score.tracks and any(t.is_drum for t in score.tracks) else "no notes"
        raise BadMidiError(f"{source}: {reason}")
    merged = symusic.Track(name="piano", program=0, is_drum=False, ttype=score.ttype)
    for t in tracks:
        merged.notes.extend(t.notes)
    merged.notes.sort()
    out = symusic.Score(score.ticks_per_quarter, ttype=score.ttype)
    out.tempos.extend(score.tempos)
    out.time_signatures.extend(score.time_signatures)
    out.key_signatures.extend(score.key_signatures)
    out.tracks.append(merged)
    return out


def write_score(score: symusic.Score, path: Path | str) -> None:
    """Write a score as a MIDI file, atomically."""
    with atomic_path(path) as tmp:
        score.dump_midi(str(tmp))
