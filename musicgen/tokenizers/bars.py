"""Bar arithmetic on token ids: which ids open a bar, how many notes each id holds, and the bar
lines of a score as the tokeniser counts bars."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import symusic

from musicgen.errors import ConfigError


def bar_starts(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """(vocab_size,) bool: the ids whose base-token expansion starts with a Bar token."""
    out = np.zeros(vocab_size, dtype=bool)
    for v in range(min(vocab_size, len(tokenizer.backend))):
        toks = tokenizer.tokens([v])
        out[v] = bool(toks) and toks[0].startswith("Bar_")
    return out

def notes_per_id(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """(vocab_size,) int: the Pitch tokens (notes) in each id's base-token expansion."""
    out = np.zeros(vocab_size, dtype=np.int64)
    for v in range(min(vocab_size, len(tokenizer.backend))):
        out[v] = sum(t.startswith("Pitch_") for t in tokenizer.tokens([v]))
    return out

def bar_position_tables(tokenizer: Any, vocab_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """What a Transformer with ``bar_position`` reads each token's place in the bar through:
    ``(bar_count, bar_sets, grid)``: per id of ``vocab_size`` (ids past the tokeniser's own, such
    as attribute tokens, set nothing), the Bar tokens in its base-token expansion, and 1 + the
    position its last Bar or Position token sets (a Bar: position 0 of the new bar; 0: the id sets
    none); ``grid``: the positions per bar (Position tokens in the base vocabulary). A tokeniser
    without bars (pitch strings) is a one-line ``ConfigError``."""
    backend = getattr(tokenizer, "backend", None)
    positions = [int(k.split("_", 1)[1]) for k in getattr(backend, "vocab", {}) if k.startswith("Position_")]
    if backend is None or not positions or not any(k.startswith("Bar_") for k in backend.vocab):
        raise ConfigError(f"model.bar_position=true needs a tokeniser with bars and positions (REMI); "
                          f"{type(getattr(tokenizer, 'base_tokenizer', tokenizer)).__name__} has none")
    count = np.zeros(vocab_size, dtype=np.int64)
    sets = np.zeros(vocab_size, dtype=np.int64)
    for v in range(min(vocab_size, len(backend))):
        for t in tokenizer.tokens([v]):
            if t.startswith("Bar_"):
                count[v] += 1
                sets[v] = 1
            elif t.startswith("Position_"):
                sets[v] = 1 + int(t.split("_", 1)[1])
    return count, sets, max(positions) + 1


def uses_time_signatures(tokenizer: Any) -> bool:
    """Whether the tokeniser writes time signatures (real bars) rather than 4/4 bars throughout."""
    return bool(getattr(getattr(getattr(tokenizer, "backend", None), "config", None), "use_time_signatures", False))

def bar_lines(score: symusic.Score, time_signatures: bool, until: int | None = None) -> np.ndarray:
    """Ticks of the bar lines of ``score`` as the tokeniser counts bars: ``lines[k]`` starts bar k
    (0-based), the last one at or past ``until`` (default: the score's end), so ``len - 1`` bars
    hold the music. With ``time_signatures``: the score's own (4/4 before the first); without
    (V6-V8's REMI): bars of 4 quarter notes from the start."""
    tpq, end = score.ticks_per_quarter, int(score.end() if until is None else until)
    sigs = [(int(ts.time), ts.numerator, ts.denominator) for ts in score.time_signatures] if time_signatures else []
    if not sigs or sigs[0][0] > 0:
        sigs.insert(0, (0, 4, 4))
    lines: list[int] = []
    for k, (t, num, den) in enumerate(sigs):
        t = max(t, lines[-1] if lines else 0)  # a signature takes effect at a bar line
        length = max(1, 4 * tpq * num // den)
        stop = sigs[k + 1][0] if k + 1 < len(sigs) else max(end, t) + length
        lines.extend(range(t, max(stop, t + 1), length))
    out = np.array(sorted(set(lines)), dtype=np.int64)
    return out[: int(np.searchsorted(out, end, side="left")) + 1]

def bar_numbers(tokenizer: Any, ids: Sequence[int], starts: np.ndarray, n_pitch: np.ndarray) -> np.ndarray:
    """The bar (0-based, as ``bar_lines`` counts them) each bar-start token at ``starts`` opens,
    read from the time of the next note: MidiTok writes a rest that crosses bar lines without Bar
    tokens, so the k-th Bar token need not open bar k. Empty bars (Bar tokens in a row) count back
    from the bar that follows them."""
    score = tokenizer.decode(ids)
    times = np.sort(np.array([n.time for t in score.tracks for n in t.notes], dtype=np.int64))
    lines = bar_lines(score, uses_time_signatures(tokenizer), int(times[-1]) + 1 if len(times) else 0)
    bar_of = np.searchsorted(lines, times, side="right") - 1
    before = np.concatenate([[0], np.cumsum(n_pitch[np.asarray(ids, dtype=np.int64)])])[starts]  # notes before each
    last = (int(bar_of[-1]) if len(times) else 0) + 1
    numbers = np.array([int(bar_of[k]) if k < len(times) else last for k in before], dtype=np.int64)
    for i in range(len(numbers) - 2, -1, -1):
        numbers[i] = min(numbers[i], numbers[i + 1] - 1)
    return numbers


def bar_tables(tok: Any, base: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bar_starts, notes_per_id)`` of ``tok``'s first ``base`` ids: what ``locate_bars`` reads,
    built once by a caller that locates spans in many scores (each table reads every id's tokens)."""
    return bar_starts(tok, base), notes_per_id(tok, base)


def locate_bars(tok: Any, base: int, score: symusic.Score, bars: tuple[int, int],
                tables: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Where the bar span ``bars`` (0-based, half-open) of ``score`` (ticks) is in its tokens:
    ``(ids, starts, is_bar, lines, i, j)``, ``starts`` the positions of the bar-start ids, the span
    ``starts[i]`` up to ``starts[j]`` (``j == len(starts)``: to the piece's end), ``lines`` the
    file's bar lines as the tokeniser counts bars. A span past the file's bars, or one whose end
    the tokens do not mark (a tokeniser with ``rests_cross_bars``, MidiTok's encoding, writes a
    rest that reaches a bar line without its Bar token), is a one-line ``ConfigError``. ``tables``:
    ``bar_tables(tok, base)``, where the caller has them (default: built here)."""
    ids = tok.encode(score)
    is_bar, n_notes = tables if tables is not None else bar_tables(tok, base)
    starts = np.flatnonzero(is_bar[np.asarray(ids)])
    numbers = bar_numbers(tok, ids, starts, n_notes)
    a, b = bars
    shown = f"infill.bars={a + 1}-{b}"
    time_signatures = uses_time_signatures(tok)
    lines = bar_lines(score, time_signatures)
    n_file = len(lines) - 1
    if b > n_file:
        what = "by its time signatures" if time_signatures else "of 4 quarter notes, the tokeniser's bars"
        raise ConfigError(f"{shown}: the file has {n_file} bars ({what})")
    index = {int(n): i for i, n in enumerate(numbers)}
    if a not in index and a > numbers[-1]:
        raise ConfigError(f"{shown}: bar {a + 1} comes after the last bar line the tokens write (bar "
                          f"{int(numbers[-1]) + 1}): no note starts after it, the last one is held across bar lines")
    for bar in (a, b):
        if bar not in index and bar <= numbers[-1]:
            raise ConfigError(f"{shown}: bar {bar + 1} starts inside a rest, where this run's tokens have no bar "
                              "line (a run trained before tokenizer.rests_cross_bars=false); choose bars that start "
                              "with a note, or retrain")
    i, j = index[a], index.get(b, len(starts))  # the span in bar-start tokens (to the piece's end past the last)
    return ids, starts, is_bar, lines, i, j
