"""The listening studies' SQLite store: balanced pairs, one answer per listener and pair under
parallel writers (processes and threads), nothing lost on reopening, CSV and Parquet exports, and
the preference pairs the DPO objective reads."""

from __future__ import annotations

import collections
import csv
import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from musicgen.data.preferences import (
    EXPORT_COLUMNS,
    PreferenceStore,
    StudyPiece,
    draw_pairs,
    preference_pairs,
)
from musicgen.errors import UserError

CONTESTANTS = {"v7": 3, "real": 2, "ngram": 4}


def make_store(path, n_pairs=30):
    pieces = [StudyPiece(f"{c}-{i}", c, f"{c}/{i}.mid", provenance={"run": c, "seed": i})
              for c, k in CONTESTANTS.items() for i in range(k)]
    by = collections.defaultdict(list)
    for p in pieces:
        by[p.contestant].append(p.piece_id)
    pairs = draw_pairs(by, n_pairs, seed=1)
    store = PreferenceStore(path)
    store.add_study(pieces, pairs)
    return store


def contestant(piece_id):
    return piece_id.split("-")[0]


def test_pairs_balance_contestants_and_pieces():
    by = {c: [f"{c}-{i}" for i in range(k)] for c, k in CONTESTANTS.items()}
    pairs = draw_pairs(by, 31, seed=0)
    assert len(pairs) == 31
    matchups = collections.Counter(frozenset(map(contestant, p)) for p in pairs)
    assert len(matchups) == 3 and max(matchups.values()) - min(matchups.values()) <= 1
    assert all(contestant(a) != contestant(b) for a, b in pairs)
    uses = collections.Counter(x for p in pairs for x in p)
    for c, ids in by.items():  # each contestant's pieces used in turn
        counts = [uses[i] for i in ids]
        assert max(counts) - min(counts) <= 1, (c, counts)
    with pytest.raises(UserError, match="two contestants"):
        draw_pairs({"v7": ["a"]}, 3)


def test_wal_and_restart_keeps_answers(tmp_path):
    store = make_store(tmp_path / "s.sqlite")
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    pair_id, left, right = store.next_pair("alice")
    assert store.record("alice", pair_id, left, right, "left", 4, 2, 3.5, "0.1.0")
    assert not store.record("alice", pair_id, right, left, "right")  # sent twice: the first stays
    again = PreferenceStore(store.path)  # a restart
    again.add_study(list(store.pieces().values()), list(store.pairs().values()))  # same study: kept
    rows = again.answers_table()
    assert len(rows) == 1 and rows[0]["choice"] == "left" and rows[0]["rating_left"] == 4
    assert rows[0]["preferred_contestant"] == contestant(left)
    assert again.next_pair("alice")[0] != pair_id
    with pytest.raises(UserError, match="another draw"):
        again.add_study([], [("v7-0", "real-0")])
    with pytest.raises(UserError, match="not"):
        again.record("bob", pair_id, left, "ngram-3", "left")
    with pytest.raises(UserError, match="choice"):
        again.record("bob", pair_id, left, right, "both")


def test_listener_meets_every_pair_once_in_recorded_random_order(tmp_path):
    store = make_store(tmp_path / "s.sqlite", n_pairs=12)
    seen, lefts = [], []
    while (nxt := store.next_pair("carol")) is not None:
        pair_id, left, right = nxt
        a, b = store.pairs()[pair_id]
        assert {left, right} == {a, b}
        lefts.append(left == a)
        seen.append(pair_id)
        store.record("carol", pair_id, left, right, "none")
    assert sorted(seen) == sorted(store.pairs())
    assert store.answered("carol") == 12 and store.answered("dave") == 0
    assert 0 < sum(lefts) < len(lefts)  # the order is not always the drawn one
    rows = store.answers_table()
    assert [(r["pair_id"], r["left_piece"]) for r in rows] == [
        (p, store.pairs()[p][0] if lf else store.pairs()[p][1]) for p, lf in zip(seen, lefts)]


def _client(args):
    path, listener = args
    store = PreferenceStore(path)
    kept = 0
    while (nxt := store.next_pair(listener)) is not None:
        pair_id, left, right = nxt
        for _ in range(2):  # every answer sent twice
            kept += store.record(listener, pair_id, left, right, "left" if pair_id % 2 else "none")
    return kept


def test_parallel_clients_lose_and_double_nothing(tmp_path):
    store = make_store(tmp_path / "s.sqlite", n_pairs=15)
    listeners = [f"l{i}" for i in range(6)]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        kept = pool.map(_client, [(str(store.path), x) for x in listeners[:3]])
    with ThreadPoolExecutor(3) as ex:  # and threads sharing one process
        kept += list(ex.map(_client, [(str(store.path), x) for x in listeners[3:]]))
    assert kept == [15] * 6
    rows = store.answers_table()
    assert len(rows) == 90
    assert collections.Counter((r["listener"], r["pair_id"]) for r in rows) == {
        (x, p): 1 for x in listeners for p in store.pairs()}


def test_exports_and_preference_pairs(tmp_path):
    store = make_store(tmp_path / "s.sqlite", n_pairs=6)
    choices = ["left", "right", "none"]
    for i, x in enumerate(["a", "b"]):
        for j in range(6):
            pair_id, left, right = store.next_pair(x)
            store.record(x, pair_id, left, right, choices[(i + j) % 3], seconds=1.0 + j)
    rows = store.answers_table()
    with open(store.export(tmp_path / "answers.csv")) as f:
        back = list(csv.DictReader(f))
    assert [r["choice"] for r in back] == [r["choice"] for r in rows] and list(back[0]) == list(EXPORT_COLUMNS)
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(store.export(tmp_path / "answers.parquet")).to_pylist()
    assert table == rows
    with pytest.raises(UserError, match="parquet"):
        store.export(tmp_path / "answers.xlsx")
    prefs = preference_pairs(store.path, tmp_path)
    decided = [r for r in rows if r["choice"] != "none"]
    assert len(prefs) == len(decided) == 8
    for p, r in zip(prefs, decided):
        won = r["left_piece"] if r["choice"] == "left" else r["right_piece"]
        assert p.preferred.piece_id == won and p.rejected.piece_id in (r["left_piece"], r["right_piece"])
        assert p.preferred.midi.startswith(str(tmp_path)) and p.preferred.provenance["run"] == contestant(won)
    with pytest.raises(UserError, match="no answers"):
        preference_pairs(tmp_path / "missing.sqlite")
