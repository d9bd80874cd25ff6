"""Group keys of the split on real tunes and the real chorale names: copies of a piece stay together."""

import json
import shutil

import pytest
import symusic

from musicgen.data import split as split_mod
from musicgen.data.corpus import list_sources
from musicgen.data.split import (
    assign_splits,
    chorale_number,
    content_key,
    group_keys,
    merged_groups,
    near_duplicate_groups,
    read_pieces,
    split_of,
)
from musicgen.metrics.similarity import MIN_UNION, SPLIT_THRESHOLD, score_contour, signature


def test_chorale_number_on_the_real_chorale_names():
    names = [f"chorales/{n}" for src in list_sources("chorales") for n in src.piece_names()]
    assert len(names) > 400
    assert chorale_number("chorales/bwv18.5-lz.mid") == chorale_number("chorales/bwv18.5-w.mid") == "bwv18.5"
    assert chorale_number("chorales/bwv69.6.mid") == chorale_number("chorales/bwv69.6-a.mid") == "bwv69.6"
    assert chorale_number("chorales/bwv248.35-3.mid") == chorale_number("chorales/bwv248.35-3c.mid")
    assert chorale_number("chorales/bwv145-a.mid") == "bwv145"
    assert chorale_number("chorales/bwv248.23-2.mid") != chorale_number("chorales/bwv248.9-1.mid")
    assert chorale_number("folk/essenFolksong/altdeu10/0001.mid") is None
    numbers = {n: chorale_number(n) for n in names}
    # every name is its number, or its number and a variant after a "-"
    assert all(n.removeprefix("chorales/").removesuffix(".mid").split("-")[0] == k for n, k in numbers.items())
    versions = {k: [n for n in names if numbers[n] == k] for k in set(numbers.values())}
    several = {k: v for k, v in versions.items() if len(v) > 1}
    assert "bwv18.5" in several and len(several) >= 5
    assert all(sum("-" not in n for n in v) <= 1 for v in several.values())  # versions differ by a suffix


def rescaled(path, out, tpq: int, lead_in: int = 0, shift: int = 0):
    """``path`` rewritten at ``tpq`` ticks per quarter, ``lead_in`` ticks later and ``shift`` semitones up."""
    score = symusic.Score(str(path)).resample(tpq, min_dur=1).shift_time(lead_in).shift_pitch(shift)
    score.dump_midi(str(out))
    return out


def test_content_key_is_the_tune_not_the_file(folk_midi_files, chorale_midi_files, tmp_path):
    a, b = folk_midi_files[:2]
    key = content_key(a)
    assert symusic.Score(str(a)).ticks_per_quarter != 960
    assert content_key(rescaled(a, tmp_path / "960.mid", 960)) == key  # another resolution
    assert content_key(rescaled(a, tmp_path / "later.mid", 960, lead_in=960 * 2, shift=3)) == key
    renamed = tmp_path / "renamed.mid"
    shutil.copy(a, renamed)
    assert content_key(renamed) == key
    assert content_key(b) != key
    keys = {content_key(p) for p in [*folk_midi_files, *chorale_midi_files]}
    assert len(keys) == len(folk_midi_files) + len(chorale_midi_files)  # different tunes, different keys


def test_identical_tunes_under_other_names_share_a_split(folk_midi_files, tmp_path):
    files = []
    for i, p in enumerate(folk_midi_files):
        copy = tmp_path / f"copy_{i}.mid"
        shutil.copy(p, copy)
        files += [(f"folk/{p.parent.name}/{p.name}", p), (f"folk/again/{i:04d}.mid", copy)]
    files += [("chorales/bwv18.5-lz.mid", folk_midi_files[0]), ("chorales/bwv18.5-w.mid", folk_midi_files[1])]
    keys = group_keys(files)
    assert merged_groups(keys) == {"groups_merged": len(folk_midi_files) + 1, "files_in_merged_groups": len(files)}
    for seed in range(5):
        side = {rel: s for s, fl in assign_splits(files, seed, 0.3, 0.2, keys).items() for rel, _ in fl}
        for (rel_a, _), (rel_b, _) in zip(files[::2], files[1::2]):
            assert side[rel_a] == side[rel_b], (seed, rel_a, rel_b)
    # by path, as before, the pairs would be split apart
    by_path = {rel: s for s, fl in assign_splits(files, 0, 0.3, 0.2).items() for rel, _ in fl}
    assert any(by_path[a] != by_path[b] for (a, _), (b, _) in zip(files[::2], files[1::2]))


def test_a_side_depends_only_on_the_key_and_the_seed(folk_midi_files, broken_midi_dir):
    files = [(f"folk/{i}.mid", p) for i, p in enumerate(folk_midi_files[:6])]
    keys = group_keys(files)
    more = files + [(f"user/{p.name}", p) for p in sorted(broken_midi_dir.iterdir())]
    more_keys = group_keys(more)
    assert {rel: more_keys[rel] for rel, _ in files} == keys
    before = {rel: s for s, fl in assign_splits(files, 0, 0.3, 0.2, keys).items() for rel, _ in fl}
    after = {rel: s for s, fl in assign_splits(more, 0, 0.3, 0.2, more_keys).items() for rel, _ in fl}
    assert all(after[rel] == before[rel] == split_of(keys[rel], 0, 0.3, 0.2) for rel in before)
    # unreadable files are keyed by their name (the cache build skips them later)
    assert more_keys["user/empty.mid"] == "path:user/empty.mid"
    assert more_keys["user/good_0.mid"].startswith("notes:")


def test_content_keys_are_remembered_by_name_size_and_mtime(folk_midi_files, tmp_path, monkeypatch):
    root = tmp_path / "midi"
    root.mkdir()
    for p in folk_midi_files[:4]:
        shutil.copy(p, root / p.name)
    files = [(f"user/{p.name}", p) for p in sorted(root.iterdir())]
    memo = tmp_path / "cache" / "content_keys.json"
    keys = group_keys(files, memo)
    saved = json.loads(memo.read_text())["keys"]
    assert {rel: entry[2] for rel, entry in saved.items()} == keys
    assert not list(memo.parent.glob(".*.tmp"))  # written atomically

    assert all(entry[3] == score_contour(symusic.Score(str(root / rel.removeprefix("user/")))).tolist()
               for rel, entry in saved.items())  # the melody contours too, for the near-duplicate search
    read = []
    real = split_mod._read_piece
    monkeypatch.setattr(split_mod, "_read_piece", lambda path: read.append(path.name) or real(path))
    mtime = memo.stat().st_mtime_ns
    assert group_keys(files, memo) == keys and read == []  # nothing read, nothing rewritten
    assert memo.stat().st_mtime_ns == mtime
    victim = root / files[0][1].name
    victim.write_bytes(folk_midi_files[5].read_bytes())  # another tune under the same name
    changed = group_keys(files, memo)
    assert read == [victim.name]
    rel = files[0][0]
    assert changed[rel] == f"notes:{content_key(folk_midi_files[5])}" != keys[rel]
    memo.write_text("not json")  # a broken memo is recomputed, never trusted
    assert group_keys(files, memo) == changed
    assert json.loads(memo.read_text())["keys"].keys() == changed.keys()


@pytest.mark.parametrize("bad", [{"version": 0, "keys": {}}, ["a list"]])
def test_an_unknown_memo_is_ignored(folk_midi_files, tmp_path, bad):
    memo = tmp_path / "content_keys.json"
    memo.write_text(json.dumps(bad))
    files = [("folk/a.mid", folk_midi_files[0])]
    assert group_keys(files, memo) == {"folk/a.mid": f"notes:{content_key(folk_midi_files[0])}"}


def variant(path, out, shift: int):
    """Another version of a tune: ``shift`` semitones up, a grace note before its 10th note, its
    last note changed (another cadence)."""
    score = symusic.Score(str(path))
    notes = score.tracks[0].notes
    grace = notes[9].copy()
    grace.duration = max(grace.duration // 4, 1)
    grace.pitch += 1
    notes[9].time += grace.duration
    notes[9].duration -= grace.duration
    notes.append(grace)
    notes.sort()
    notes[-1].pitch += 2
    score.shift_pitch(shift).dump_midi(str(out))
    return out


def _figures(path) -> int:
    return len(signature(score_contour(symusic.Score(str(path)))))


def test_variants_of_a_tune_join_one_group_and_others_stay_apart(folk_midi_files, tmp_path):
    files = [(f"folk/{i:02d}.mid", p) for i, p in enumerate(folk_midi_files)]
    exact, contours = read_pieces(files)
    assert near_duplicate_groups(exact, contours, SPLIT_THRESHOLD) == exact  # 12 different real tunes
    # variants of four tunes long enough to be told apart by figures (>= MIN_UNION), and of a short one
    long = [(rel, p) for rel, p in files if _figures(p) >= MIN_UNION][:4]
    short = next((rel, p) for rel, p in files if _figures(p) < MIN_UNION / 2)
    varied = [*long, short]
    more = files + [(f"{rel}.v", variant(p, tmp_path / f"v{i}.mid", 3 + i)) for i, (rel, p) in enumerate(varied)]
    exact, contours = read_pieces(more)
    assert len(set(exact.values())) == len(more)  # no variant is an exact copy
    keys = near_duplicate_groups(exact, contours, SPLIT_THRESHOLD)
    for rel, _ in long:
        assert keys[rel] == keys[f"{rel}.v"] == min(exact[rel], exact[f"{rel}.v"])  # the smallest key
    # a tune of a few figures shares too few with its variant: only exact copies of it are found
    assert keys[short[0]] != keys[f"{short[0]}.v"]
    assert all(keys[rel] == exact[rel] for rel, _ in files if (rel, _) not in long)
    assert merged_groups(keys, exact) == {"groups_merged": 4, "files_in_merged_groups": 8,
                                          "near_duplicate_groups": 4, "files_in_near_duplicate_groups": 8}
    for seed in range(3):
        side = {rel: s for s, fl in assign_splits(more, seed, 0.3, 0.2, keys).items() for rel, _ in fl}
        assert all(side[rel] == side[f"{rel}.v"] for rel, _ in long)
    assert group_keys(more, near_duplicates=SPLIT_THRESHOLD) == keys
    assert group_keys(more) == exact  # None: exact copies only


def test_adding_files_moves_only_the_tunes_they_are_variants_of(folk_midi_files, tmp_path):
    old = [(f"folk/{i:02d}.mid", p) for i, p in enumerate(folk_midi_files)]
    old = [(rel, p) for rel, p in old if _figures(p) >= MIN_UNION]
    new = [(f"folk/new{i}.mid", variant(p, tmp_path / f"n{i}.mid", 5)) for i, (_, p) in enumerate(old[:5])]
    before = group_keys(old, near_duplicates=SPLIT_THRESHOLD)
    after = group_keys(old + new, near_duplicates=SPLIT_THRESHOLD)
    for i, (rel, _) in enumerate(old):
        if i >= 5:  # no added file is a variant of it: its key, so its side, cannot change
            assert after[rel] == before[rel]
        else:  # its key changes only to the added variant's, when that one is smaller
            assert after[rel] == after[f"folk/new{i}.mid"] == min(before[rel], read_pieces(new)[0][f"folk/new{i}.mid"])
