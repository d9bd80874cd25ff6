"""The listening studies' answers: one SQLite file per study (WAL mode), written by the listening
page (``musicgen listen``), read by the ratings (``musicgen ratings``) and, later, by the DPO
objective (``preference_pairs``). A component: it imports nothing of the app or of training.

Three tables. ``pieces``: each piece a listener can hear, under an opaque id (never the source's
name), with its contestant, its files and its provenance (run, checkpoint sha, sampling settings,
seed). ``pairs``: the study's pairs of pieces, drawn once (``draw_pairs``) so that every pair of
contestants is compared about equally often. ``answers``: one row per listener and pair, the order
shown (which piece was on the left), the choice (``left``, ``right`` or ``none``: no preference),
optional 1-5 ratings, seconds taken and the app's version. ``UNIQUE(listener, pair_id)``: an answer
sent twice (two tabs, a double click, a retry) is kept once, and concurrent writers each open
their own connection, so no answer is lost or doubled.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import itertools
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicgen.errors import ConfigError, UserError
from musicgen.fs import atomic_path

CHOICES = ("left", "right", "none")
SCHEMA = """
CREATE TABLE IF NOT EXISTS pieces (
    piece_id TEXT PRIMARY KEY, contestant TEXT NOT NULL, midi TEXT NOT NULL, png TEXT, audio TEXT,
    provenance TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    pair_id INTEGER PRIMARY KEY, piece_a TEXT NOT NULL REFERENCES pieces(piece_id),
    piece_b TEXT NOT NULL REFERENCES pieces(piece_id));
CREATE TABLE IF NOT EXISTS answers (
    answer_id INTEGER PRIMARY KEY AUTOINCREMENT, listener TEXT NOT NULL,
    pair_id INTEGER NOT NULL REFERENCES pairs(pair_id),
    left_piece TEXT NOT NULL, right_piece TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'none')),
    rating_left INTEGER CHECK (rating_left BETWEEN 1 AND 5), rating_right INTEGER CHECK (rating_right BETWEEN 1 AND 5),
    seconds REAL, app_version TEXT, answered_at REAL NOT NULL,
    UNIQUE (listener, pair_id));
"""
#: The columns of an exported answer (``answers_table``), provenance joined in.
EXPORT_COLUMNS = ("answer_id", "listener", "pair_id", "left_piece", "right_piece", "left_contestant",
                  "right_contestant", "choice", "preferred_contestant", "rating_left", "rating_right", "seconds",
                  "app_version", "answered_at", "left_provenance", "right_provenance")


@dataclasses.dataclass(frozen=True)
class StudyPiece:
    """A piece of a study: its opaque id, contestant, files (relative to the study folder) and provenance."""

    piece_id: str
    contestant: str
    midi: str
    png: str | None = None
    audio: str | None = None
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """One answered pair with a preference (ties are left out): what the DPO objective reads."""

    preferred: StudyPiece
    rejected: StudyPiece
    listener: str
    answer_id: int


def draw_pairs(pieces: Mapping[str, Sequence[str]], n_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n_pairs`` pairs of piece ids from different contestants (``pieces``: contestant -> its piece
    ids), every pair of contestants taken in turn so that each is compared equally often (within
    one), and each contestant's pieces used in turn, in a random order; the pairs shuffled."""
    names = sorted(pieces)
    if len(names) < 2:
        raise ConfigError(f"a study needs at least two contestants, got {names}")
    if any(not pieces[c] for c in names):
        raise ConfigError(f"contestants without pieces: {[c for c in names if not pieces[c]]}")
    rng = np.random.default_rng(seed)
    cycles = {c: itertools.cycle([pieces[c][i] for i in rng.permutation(len(pieces[c]))]) for c in names}
    matchups = list(itertools.combinations(names, 2))
    rng.shuffle(matchups)
    out = [(next(cycles[a]), next(cycles[b])) for a, b in itertools.islice(itertools.cycle(matchups), n_pairs)]
    return [out[i] for i in rng.permutation(len(out))]


def left_is_a(listener: str, pair_id: int) -> bool:
    """The order a listener is shown a pair: random across listeners and pairs, fixed for each (a
    reload shows the same order), and recorded with the answer."""
    return bool(np.random.default_rng([abs(hash_text(listener)), pair_id]).integers(2))


def hash_text(text: str) -> int:
    """A stable 63-bit integer of a string (Python's ``hash`` changes between processes)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


class PreferenceStore:
    """One study's answers in SQLite (``path``, made with its tables when missing). Each call opens
    its own connection, so threads and processes can share a store."""

    def __init__(self, path: Path | str, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise UserError(f"no answers at {self.path}: run `musicgen listen` for this study first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:  # outside a transaction: the journal mode cannot change inside one
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (committed on success, rolled back on error), then closed."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # ------------------------------------------------------------------ the study
    def add_study(self, pieces: Sequence[StudyPiece], pairs: Sequence[tuple[str, str]]) -> None:
        """The study's pieces and pairs, written once: a store that has them already keeps its own
        (a restart reuses them; different ones are refused, so answers never meet other pieces)."""
        with self.connect() as db:
            have = db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
            if have:
                old = [tuple(r) for r in db.execute("SELECT piece_a, piece_b FROM pairs ORDER BY pair_id")]
                if old != [tuple(p) for p in pairs]:
                    raise UserError(f"{self.path} holds another draw of this study's pairs; "
                                    "give the changed study a new name (or remove the file)")
                return
            db.executemany("INSERT INTO pieces VALUES (?, ?, ?, ?, ?, ?)",
                           [(p.piece_id, p.contestant, p.midi, p.png, p.audio, json.dumps(dict(p.provenance)))
                            for p in pieces])
            db.executemany("INSERT INTO pairs (piece_a, piece_b) VALUES (?, ?)", pairs)

    def pieces(self) -> dict[str, StudyPiece]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM pieces").fetchall()
        return {r["piece_id"]: StudyPiece(r["piece_id"], r["contestant"], r["midi"], r["png"], r["audio"],
                                          json.loads(r["provenance"])) for r in rows}

    def pairs(self) -> dict[int, tuple[str, str]]:
        with self.connect() as db:
            return {r[0]: (r[1], r[2]) for r in db.execute("SELECT pair_id, piece_a, piece_b FROM pairs")}

    def next_pair(self, listener: str) -> tuple[int, str, str] | None:
        """The next pair for ``listener`` as ``(pair_id, left piece, right piece)``: one they have not
        answered, among those with the fewest answers so far (so listeners spread over the pairs),
        the tie broken by a draw fixed per listener; None when they have answered every pair."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT p.pair_id, p.piece_a, p.piece_b, COUNT(a.answer_id) AS n FROM pairs p "
                "LEFT JOIN answers a ON a.pair_id = p.pair_id GROUP BY p.pair_id "
                "HAVING p.pair_id NOT IN (SELECT pair_id FROM answers WHERE listener = ?)", (listener,)).fetchall()
        if not rows:
            return None
        pair_id, a, b, _ = min(rows, key=lambda r: (r["n"], hash_text(f"{listener}:{r['pair_id']}")))
        return (pair_id, a, b) if left_is_a(listener, pair_id) else (pair_id, b, a)

    # ------------------------------------------------------------------ answers
    def answered(self, listener: str) -> int:
        """How many pairs ``listener`` has answered."""
        with self.connect() as db:
            return db.execute("SELECT COUNT(*) FROM answers WHERE listener = ?", (listener,)).fetchone()[0]

    def record(self, listener: str, pair_id: int, left: str, right: str, choice: str,
               rating_left: int | None = None, rating_right: int | None = None, seconds: float | None = None,
               app_version: str | None = None) -> bool:
        """Keep one answer; False when this listener had answered this pair already (the first stays)."""
        if choice not in CHOICES:
            raise UserError(f"choice={choice!r}: one of {', '.join(CHOICES)}")
        for r in (rating_left, rating_right):
            if r is not None and not 1 <= r <= 5:
                raise UserError(f"rating {r}: 1 to 5, or none")
        with self.connect() as db:
            pair = db.execute("SELECT piece_a, piece_b FROM pairs WHERE pair_id = ?", (pair_id,)).fetchone()
            if pair is None or {left, right} != {pair[0], pair[1]}:
                raise UserError(f"pair {pair_id} is not ({left}, {right}) in this study")
            cur = db.execute(
                "INSERT INTO answers (listener, pair_id, left_piece, right_piece, choice, rating_left, rating_right,"
                " seconds, app_version, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (listener, pair_id) DO NOTHING",
                (listener, pair_id, left, right, choice, rating_left, rating_right, seconds, app_version, time.time()))
            return cur.rowcount == 1

    def answers_table(self) -> list[dict[str, Any]]:
        """Every answer with both pieces' contestants and provenance (``EXPORT_COLUMNS``), in order."""
        pieces = self.pieces()
        with self.connect() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM answers ORDER BY answer_id")]
        out = []
        for r in rows:
            left, right = pieces[r["left_piece"]], pieces[r["right_piece"]]
            preferred = {"left": left.contestant, "right": right.contestant}.get(r["choice"])
            out.append({**r, "left_contestant": left.contestant, "right_contestant": right.contestant,
                        "preferred_contestant": preferred, "left_provenance": json.dumps(dict(left.provenance)),
                        "right_provenance": json.dumps(dict(right.provenance))})
        return [{k: r[k] for k in EXPORT_COLUMNS} for r in out]

    def export(self, path: Path | str) -> Path:
        """The answers (``answers_table``) as ``.csv`` or ``.parquet`` (pyarrow), written atomically."""
        path = Path(path)
        rows = self.answers_table()
        if path.suffix == ".csv":
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
                w.writeheader()
                w.writerows(rows)
        elif path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist(rows, schema=_parquet_schema(pa))
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp)
        else:
            raise UserError(f"{path}: export to a .csv or .parquet file")
        return path


def _parquet_schema(pa):
    types = {"answer_id": pa.int64(), "pair_id": pa.int64(), "rating_left": pa.int64(), "rating_right": pa.int64(),
             "seconds": pa.float64(), "answered_at": pa.float64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in EXPORT_COLUMNS])


def preference_pairs(path: Path | str, study_dir: Path | str | None = None) -> list[PreferencePair]:
    """The answered pairs with a preference (ties left out), preferred and rejected piece with their
    provenance; with ``study_dir``, the pieces' file paths made absolute under it. For the DPO objective."""
    store = PreferenceStore(path, create=False)
    pieces = store.pieces()
    if study_dir is not None:
        root = Path(study_dir)
        pieces = {k: dataclasses.replace(p, midi=str(root / p.midi)) for k, p in pieces.items()}
    out = []
    for r in store.answers_table():
        if r["choice"] == "none":
            continue
        left, right = pieces[r["left_piece"]], pieces[r["right_piece"]]
        won, lost = (left, right) if r["choice"] == "left" else (right, left)
        out.append(PreferencePair(won, lost, r["listener"], r["answer_id"]))
    return out
