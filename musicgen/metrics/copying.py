"""How much of a sample is copied from the training set.

A model can score well on every distribution figure by replaying training pieces, so the
evaluation also asks, per sample: how many of its n-grams (n = 8, 16 symbols) occur in some
training piece, and how long is the longest stretch of it found, contiguous, inside ONE
training piece. The symbols are the caller's choice; ``melody_symbols`` gives the melody's
pitches (optionally with their durations) of a decoded score, the same for every tokeniser, and
``interval_symbols`` its successive pitch differences, which a transposition leaves unchanged: a
training tune replayed in another key copies nothing in absolute pitch but everything in intervals.

``CopyIndex`` holds a generalised suffix automaton of the training sequences: the smallest
automaton that accepts exactly the contiguous subsequences of the individual training
sequences. Reading a query through it gives, at each position, the length of the longest
run ending there that occurs within one training piece (the matching statistics); an n-gram
ending at position i occurs in the training set iff that length is at least n. A run that
joins the end of one training piece to the start of another is no subsequence of either and
is never matched, which joining the pieces into one string would get wrong unless each join
had a unique separator; the generalised automaton needs none. Building is linear in the
total training length (pure Python: about a second per 100,000 symbols), a query linear in
its length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import symusic

from musicgen.metrics.features import DURATION_VALUES, duration_bins, melody

NGRAM_NS = (8, 16)

#: Number of duration bins: ``melody_symbols(..., with_duration=True)`` is ``pitch * this + bin``.
N_DURATION_BINS = len(DURATION_VALUES) + 1


def melody_symbols(score: symusic.Score, with_duration: bool = False) -> np.ndarray:
    """The melody of a score (``features.melody``: the highest note per onset, in onset order)
    as int64 symbols: its MIDI pitches, or with ``with_duration`` ``pitch * 11 + duration bin``
    (the 11 note-value bins of ``features.duration_bins``), so a few ticks of difference in a
    duration do not break a match but a quarter and an eighth are different symbols."""
    pitches, quarters = melody(score)
    if not with_duration:
        return pitches.astype(np.int64)
    return (pitches * N_DURATION_BINS + duration_bins(quarters)).astype(np.int64)


def interval_symbols(score: symusic.Score, with_duration: bool = False) -> np.ndarray:
    """The melody's successive pitch differences (semitones, -127..127) as int64 symbols, one
    fewer than its notes; with ``with_duration`` each interval is paired with the duration bin of
    the note it leads to, ``(interval + 127) * 11 + bin``. Transposing the score changes none of
    them, so a ``CopyIndex`` over interval symbols finds transposed copies without trying keys;
    a run of ``k`` interval symbols is a run of ``k + 1`` notes."""
    pitches, quarters = melody(score)
    steps = np.diff(pitches.astype(np.int64))
    if not with_duration:
        return steps
    return ((steps + 127) * N_DURATION_BINS + duration_bins(quarters)[1:]).astype(np.int64)


class CopyIndex:
    """Copying statistics of query sequences against a set of training sequences.

    ``CopyIndex(train_sequences, ns=(8, 16))``: one sequence of ints per training piece
    (lists, tuples or 1-D integer arrays). ``stats(query)`` returns the per-piece vector
    ``[copied_n, total_n for each n in ns..., longest_run]`` (``columns`` names them):
    ``total_n = max(len - n + 1, 0)`` n-grams of the query, ``copied_n`` of them occurring in
    some training piece (an n-gram occurring twice in the query counts twice), and
    ``longest_run`` the length of the longest contiguous part of the query found within one
    training piece. Stack the vectors of a set of pieces (``stats_many``) and use
    ``bootstrap.ratio(0, 1)`` for the share of copied 8-grams, ``bootstrap.mean_of(-1)`` for
    the mean longest run.
    """

    def __init__(self, train_sequences: Iterable[Sequence[int] | np.ndarray], ns: Sequence[int] = NGRAM_NS) -> None:
        if any(int(n) < 1 for n in ns):
            raise ValueError(f"every n must be >= 1, got {tuple(ns)}")
        self.ns = tuple(int(n) for n in ns)
        self.columns = (*(f"{k}_{n}" for n in self.ns for k in ("copied", "total")), "longest_run")
        # state 0 is the root; nxt: symbol -> state, length: longest string of the state,
        # link: suffix link (-1 for the root)
        self._next: list[dict[int, int]] = [{}]
        self._length: list[int] = [0]
        self._link: list[int] = [-1]
        self.n_sequences = self.n_symbols = 0
        for seq in train_sequences:
            self._add(_as_list(seq))

    @property
    def n_states(self) -> int:
        return len(self._length)

    def _add(self, seq: list[int]) -> None:
        """Insert one sequence (the online generalised suffix automaton: each sequence starts
        again from the root, and a transition that already exists is followed or split)."""
        nxt, length, link = self._next, self._length, self._link
        last = 0
        for c in seq:
            q = nxt[last].get(c)
            if q is not None:  # the extended string is already known (seen in an earlier piece)
                if length[q] == length[last] + 1:
                    last = q
                    continue
                clone = len(length)
                nxt.append(dict(nxt[q]))
                length.append(length[last] + 1)
                link.append(link[q])
                p = last
                while p != -1 and nxt[p].get(c) == q:
                    nxt[p][c] = clone
                    p = link[p]
                link[q] = clone
                last = clone
                continue
            cur = len(length)
            nxt.append({})
            length.append(length[last] + 1)
            link.append(0)
            p = last
            while p != -1 and c not in nxt[p]:
                nxt[p][c] = cur
                p = link[p]
            if p != -1:
                q = nxt[p][c]
                if length[p] + 1 == length[q]:
                    link[cur] = q
                else:
                    clone = len(length)
                    nxt.append(dict(nxt[q]))
                    length.append(length[p] + 1)
                    link.append(link[q])
                    while p != -1 and nxt[p].get(c) == q:
                        nxt[p][c] = clone
                        p = link[p]
                    link[q] = clone
                    link[cur] = clone
            last = cur
        self.n_sequences += 1
        self.n_symbols += len(seq)

    def match_lengths(self, query: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per position i of the query, the length of the longest run ``query[i - L + 1 : i + 1]``
        that occurs within one training sequence (0 if even ``query[i]`` never occurs)."""
        nxt, length, link = self._next, self._length, self._link
        out = np.zeros(len(query), dtype=np.int64)
        v = run = 0
        for i, c in enumerate(_as_list(query)):
            while v and c not in nxt[v]:  # shorten the run to the longest suffix that continues
                v = link[v]
                run = length[v]
            t = nxt[v].get(c)
            if t is None:
                run = 0
            else:
                v, run = t, run + 1
            out[i] = run
        return out

    def stats(self, query: Sequence[int] | np.ndarray) -> np.ndarray:
        """The per-piece vector ``[copied_n, total_n, ..., longest_run]`` of one query (int64)."""
        runs = self.match_lengths(query)
        out = []
        for n in self.ns:
            out += [int((runs >= n).sum()), max(len(runs) - n + 1, 0)]  # runs[i] >= n needs i >= n - 1
        out.append(int(runs.max()) if len(runs) else 0)
        return np.array(out, dtype=np.int64)

    def stats_many(self, queries: Iterable[Sequence[int] | np.ndarray]) -> np.ndarray:
        """``(P, len(columns))`` stacked ``stats`` of the queries (a ``bootstrap_ci`` input)."""
        rows = [self.stats(q) for q in queries]
        return np.array(rows, dtype=np.int64).reshape(len(rows), len(self.columns))


def _as_list(seq: Sequence[int] | np.ndarray) -> list[int]:
    """Plain Python ints (dictionary keys: numpy scalars hash alike but are slower)."""
    if isinstance(seq, np.ndarray):
        if seq.ndim != 1:
            raise ValueError(f"expected a 1-D sequence, got shape {seq.shape}")
        return seq.astype(np.int64).tolist()
    return [int(c) for c in seq]


__all__ = ["NGRAM_NS", "N_DURATION_BINS", "CopyIndex", "interval_symbols", "melody_symbols"]
