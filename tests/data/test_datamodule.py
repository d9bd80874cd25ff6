"""Split, augmentation, cache and DataModule on real tunes."""

import io
import json
import shutil

import numpy as np
import pytest

from musicgen.constants import BOS_ID, EOS_ID, UNK_ID
from musicgen.data import MidiDataModule
from musicgen.data import cache as token_cache
from musicgen.data.augment import AugmentConfig, transpositions
from musicgen.data.cache import is_transposed_copy
from musicgen.data.split import assign_splits, split_of, subsample
from musicgen.errors import CheckpointError, ConfigError
from musicgen.midi_io import read_score
from musicgen.tokenizers import PitchTokenizer, RemiTokenizer


def make_dm(root, cache_dir, tokenizer=None, **kw):
    kw = {"val_frac": 0.3, "mode": "causal", "seq_len": 32, "stride": 16, "batch_size": 4, "progress": False, **kw}
    return MidiDataModule(tokenizer or RemiTokenizer(), root=str(root), cache_dir=str(cache_dir), **kw)


def test_split_is_stable_when_files_are_added():
    names = [f"folk/{i}.mid" for i in range(500)]
    before = {n: split_of(n, 0, 0.1) for n in names}
    more = assign_splits([(n, None) for n in names + [f"new/{i}.mid" for i in range(300)]], 0, 0.1)
    after = {n: s for s, fl in more.items() for n, _ in fl}
    assert all(after[n] == before[n] for n in names)
    val_share = sum(s == "val" for s in before.values()) / len(names)
    assert 0.06 < val_share < 0.14
    assert split_of("folk/1.mid", 0, 0.1) == split_of("folk/1.mid", 0, 0.1)


def test_subsample_is_stable_and_capped():
    files = [(f"f{i}", None) for i in range(100)]
    a = subsample(files, 10, 0)
    assert len(a) == 10 and subsample(files, 10, 0) == a
    assert set(a) <= set(subsample(files + [(f"g{i}", None) for i in range(5)], 15, 0)) | set(a)


def test_transpositions_stay_in_range_and_are_seeded():
    cfg = AugmentConfig(copies=2, max_shift=6)
    shifts = transpositions("a.mid", 60, 72, (21, 108), cfg, seed=0)
    assert len(shifts) == 2 and len(set(shifts)) == 2 and 0 not in shifts
    assert all(-6 <= s <= 6 for s in shifts)
    assert shifts == transpositions("a.mid", 60, 72, (21, 108), cfg, seed=0)
    # a tune near the top of the range: only downward shifts are drawn
    assert all(s < 0 for s in transpositions("b.mid", 60, 106, (21, 108), cfg, seed=0) if s > 2)
    assert all(106 + s <= 108 for s in transpositions("b.mid", 60, 106, (21, 108), cfg, seed=0))
    assert transpositions("c.mid", 21, 108, (21, 108), cfg, seed=0) == []


def test_no_validation_file_or_transposition_reaches_training(real_midi_dir, tmp_path):
    dm = make_dm(real_midi_dir, tmp_path / "cache")
    dm.setup()
    train_names = dm.cache.splits["train"].names
    val_names = dm.cache.splits["val"].names
    assert val_names and train_names
    train_files = {n.split("@")[0] for n in train_names}
    assert not train_files & set(val_names)
    # and by content: no transposition of a validation piece is among the training documents
    tok = dm.tokenizer
    val_scores = [read_score(real_midi_dir / n.removeprefix("user/")) for n in val_names]
    train_docs = {tuple(dm.cache.splits["train"].doc(i)[1:-1]) for i in range(dm.cache.splits["train"].n_docs)}
    for score in val_scores:
        for s in range(-6, 7):
            assert tuple(tok.encode(score.shift_pitch(s))) not in train_docs


def test_augmentation_count(real_midi_dir, tmp_path):
    dm = make_dm(real_midi_dir, tmp_path / "cache", augment={"copies": 2, "max_shift": 6})
    dm.setup()
    meta = dm.cache.meta["splits"]["train"]
    names = dm.cache.splits["train"].names
    originals = [n for n in names if "@" not in n]
    assert len(originals) == meta["files"]
    assert len(names) == 3 * meta["files"]  # folk and chorales fit the range: 2 copies each
    assert dm.cache.meta["splits"]["val"]["docs"] == dm.cache.meta["splits"]["val"]["files"]
    none = make_dm(real_midi_dir, tmp_path / "cache0", augment={"copies": 0})
    none.setup()
    assert none.cache.splits["train"].n_docs == meta["files"]


def test_cache_layout_reuse_and_invalidation(real_midi_dir, tmp_path):
    root = tmp_path / "midi"
    shutil.copytree(real_midi_dir, root)
    cache_dir = tmp_path / "cache"
    dm = make_dm(root, cache_dir)
    dm.setup()
    first = dm.cache.path
    st = dm.cache.splits["train"]
    assert isinstance(st.tokens, np.memmap)
    assert st.tokens[0] == BOS_ID and st.tokens[st.offsets[1] - 1] == EOS_ID
    assert (first / "tokenizer.json").exists()
    dm.prepare_data()  # Lightning calls it again after setup(): nothing is rebuilt
    dm.setup()
    assert [p.name for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".")] == [first.name]
    assert (cache_dir / "content_keys.json").is_file()  # the memo of group keys, beside the caches
    # same inputs: reused, not rebuilt
    mtime = (first / "meta.json").stat().st_mtime_ns
    dm2 = make_dm(root, cache_dir)
    dm2.setup()
    assert dm2.cache.path == first and (first / "meta.json").stat().st_mtime_ns == mtime
    # another tokeniser config: another cache
    dm3 = make_dm(root, cache_dir, tokenizer=PitchTokenizer())
    dm3.setup()
    assert dm3.cache.path != first
    # a changed file: rebuilt
    victim = sorted(root.rglob("*.mid"))[0]
    victim.write_bytes(sorted(real_midi_dir.rglob("*.mid"))[1].read_bytes())
    dm4 = make_dm(root, cache_dir)
    dm4.setup()
    assert dm4.cache.path != first
    # an added file: rebuilt
    shutil.copy(victim, root / "extra.mid")
    dm5 = make_dm(root, cache_dir)
    dm5.setup()
    assert dm5.cache.path not in (first, dm4.cache.path)


def test_batches_from_the_datamodule(real_midi_dir, tmp_path):
    dm = make_dm(real_midi_dir, tmp_path / "cache", mode="seq2one", seq_len=20, stride=1)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 20) and y.shape == (4,)
    assert int(x.max()) < dm.tokenizer.vocab_size and int(y.max()) < dm.tokenizer.vocab_size
    assert len(dm.datasets["train"]) == len(dm.cache.splits["train"].tokens) - 20


def test_broken_files_are_skipped_and_left_untouched(broken_midi_dir, broken_midi_names, tmp_path, caplog):
    before = {p: p.read_bytes() for p in broken_midi_dir.rglob("*") if p.is_file()}
    dm = make_dm(broken_midi_dir, tmp_path / "cache", val_frac=0.0, test_frac=0.0)
    with caplog.at_level("WARNING"):
        dm.setup()
    skipped = dm.cache.meta["skipped"]
    n_bad = sum(1 for p in before if "good" not in p.name)
    assert len(skipped) == n_bad
    assert sum("skipping" in r.message for r in caplog.records) == n_bad
    assert {p: p.read_bytes() for p in before} == before
    # exactly the broken files are skipped, each with the reason read_score gives for it
    used = sorted(n.removeprefix("user/") for n in dm.cache.meta["splits"]["train"]["names"] if "@" not in n)
    assert used == ["good_0.mid", "good_1.mid", "good_2.mid"]
    reasons = {s["file"].removeprefix("user/"): s["reason"] for s in skipped}
    assert reasons.keys() == broken_midi_names.keys()
    for name, reason in reasons.items():
        assert f"{name}: {broken_midi_names[name]}" in reason, (name, reason)
    lines = [r.getMessage() for r in caplog.records if r.name == "musicgen.data.cache"]
    assert any(line.startswith(f"skipped {n_bad} of {len(before)} files") for line in lines), lines


def test_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    dm = make_dm(tmp_path / "empty", tmp_path / "cache")
    with pytest.raises(ValueError, match="empty"):
        dm.setup()


def test_only_broken_files_is_a_clear_error(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "x.mid").write_bytes(b"")
    (d / "y.mid").write_text("hello")
    dm = make_dm(d, tmp_path / "cache", val_frac=0.0, test_frac=0.0)
    with pytest.raises(ValueError, match="no usable training files"):
        dm.setup()


def test_identical_tunes_under_other_names_land_in_one_split(real_midi_dir, tmp_path):
    root = tmp_path / "midi"
    shutil.copytree(real_midi_dir, root)
    originals = sorted(p for p in root.rglob("*.mid"))
    for i, p in enumerate(originals):  # the same tunes again, as another collection would hold them
        (root / "again").mkdir(exist_ok=True)
        shutil.copy(p, root / "again" / f"{i:04d}.mid")
    dm = make_dm(root, tmp_path / "cache", test_frac=0.2)
    dm.setup()
    side = {n: s for s, st in dm.cache.splits.items() for n in st.names if not is_transposed_copy(n)}
    assert set(side.values()) == {"train", "val", "test"}
    for i, p in enumerate(originals):
        assert side[f"user/{p.relative_to(root).as_posix()}"] == side[f"user/again/{i:04d}.mid"], p
    assert dm.cache.meta["groups_merged"] == len(originals)
    assert dm.cache.meta["files_in_merged_groups"] == 2 * len(originals)


def test_note_counts_come_from_the_source_files(real_midi_dir, tmp_path):
    counts = {}
    for tok in (RemiTokenizer(), PitchTokenizer()):
        dm = make_dm(real_midi_dir, tmp_path / "cache", tokenizer=tok, test_frac=0.2)
        dm.setup()
        for s, st in dm.cache.splits.items():
            assert st.notes.dtype == np.int64 and st.notes.shape == (st.n_docs,)
            for name, n in zip(st.names, st.notes.tolist()):
                source = real_midi_dir / name.removeprefix("user/").split("@")[0]
                assert n == len(read_score(source).tracks[0].notes), name  # a copy: its original's count
            assert dm.cache.meta["splits"][s]["notes"] == int(st.notes.sum())
            counts[type(tok).__name__, s] = (st.names, st.notes.tolist())
    for s in ("train", "val", "test"):
        assert counts["RemiTokenizer", s] == counts["PitchTokenizer", s]  # the same for every tokeniser


def test_originals_are_the_untransposed_documents(real_midi_dir, tmp_path):
    dm = make_dm(real_midi_dir, tmp_path / "cache", augment={"copies": 2, "max_shift": 6})
    dm.setup()
    st = dm.cache.splits["train"]
    idx = st.originals()
    assert idx.dtype == np.int64 and len(idx) == dm.cache.meta["splits"]["train"]["files"] < st.n_docs
    assert [st.names[i] for i in idx] == [n for n in st.names if "@" not in n]
    val = dm.cache.splits["val"]
    assert val.originals().tolist() == list(range(val.n_docs))
    assert is_transposed_copy("folk/a.mid@+3") and is_transposed_copy("folk/a.mid@-12")
    assert not is_transposed_copy("user/me@home.mid") and not is_transposed_copy("folk/a.mid")


def test_pitch_vocabulary_covers_the_transposed_training_copies(real_midi_dir, tmp_path):
    dm = make_dm(real_midi_dir, tmp_path / "cache", tokenizer=PitchTokenizer(), augment={"copies": 2, "max_shift": 6})
    dm.setup()
    st = dm.cache.splits["train"]
    assert any(is_transposed_copy(n) for n in st.names)
    assert np.mean(np.asarray(st.tokens) == UNK_ID) == 0
    # the vocabulary holds strings that only the transposed copies have
    originals = {s for i in st.originals() for s in dm.tokenizer.to_strings(real_midi_dir / st.names[i][5:])}
    assert set(dm.tokenizer.itos[4:]) > originals


def test_bpe_still_learns_from_the_originals_only(real_midi_dir, tmp_path, monkeypatch):
    seen = []
    real = RemiTokenizer.train
    monkeypatch.setattr(RemiTokenizer, "train", lambda self, paths: seen.append(list(paths)) or real(self, paths))
    dm = make_dm(real_midi_dir, tmp_path / "cache", tokenizer=RemiTokenizer(bpe_vocab_size=400))
    dm.setup()
    names = [n for n in dm.cache.splits["train"].names if not is_transposed_copy(n)]
    assert seen == [[real_midi_dir / n.removeprefix("user/") for n in names]]


def test_a_cache_of_an_older_format_is_refused(real_midi_dir, tmp_path):
    dm = make_dm(real_midi_dir, tmp_path / "cache")
    dm.setup()
    meta_path = dm.cache.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format"] = 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format 1, this musicgen reads format 2"):
        token_cache.load(dm.cache.path)


def test_cache_tokens_are_each_document_between_bos_and_eos(tmp_path, folk_midi_files):
    files = {"train": [(f"t/{i}.mid", p) for i, p in enumerate(folk_midi_files[:6])],
             "val": [(f"v/{i}.mid", p) for i, p in enumerate(folk_midi_files[6:9])], "test": []}
    paths = {rel: p for fl in files.values() for rel, p in fl}
    root = tmp_path / "cache"
    built = token_cache.build_or_load(root, files, RemiTokenizer(), AugmentConfig(copies=2, max_shift=6), 0,
                                      progress=False)
    assert sorted(p.name for p in root.iterdir()) == [".lock", built.path.name]  # no temporary directory left
    assert sorted(p.name for p in built.path.iterdir()) == sorted(
        ["meta.json", "tokenizer.json", *(f"{s}.{a}.npy" for s in files for a in ("tokens", "offsets", "notes"))])
    for s, fl in files.items():
        st, meta = built.splits[s], built.meta["splits"][s]
        docs = []
        for name in st.names:  # in file order, each original followed by its transposed copies
            rel, _, shift = name.partition("@")
            score = read_score(paths[rel])
            docs.append([BOS_ID, *built.tokenizer.encode(score.shift_pitch(int(shift)) if shift else score), EOS_ID])
        assert [n for n in st.names if not is_transposed_copy(n)] == [rel for rel, _ in fl]
        assert st.offsets.tolist() == np.cumsum([0, *map(len, docs)]).tolist()
        expected = np.array([t for d in docs for t in d], dtype=np.uint16)
        assert st.tokens.dtype == np.uint16 and np.array_equal(st.tokens, expected)
        assert meta["docs"] == st.n_docs == len(docs) and meta["tokens"] == len(expected)
        saved = io.BytesIO()
        np.save(saved, expected)
        assert (built.path / f"{s}.tokens.npy").read_bytes() == saved.getvalue()  # the file np.save writes
    assert built.splits["train"].n_docs == 3 * len(files["train"]) and built.splits["test"].n_docs == 0


def test_include_keeps_one_collection_on_the_sides_it_has_in_the_pool(real_midi_dir, tmp_path):
    """``data.include``: a collection alone has the same test pieces as inside a pool of collections,
    even a tune with a variant in another collection (their group is split before the filter; split
    without the other collection, some of these tunes land elsewhere)."""
    import symusic

    root = tmp_path / "midi"
    shutil.copytree(real_midi_dir / "folk", root)
    oneills = sorted((root / "oneills1850").rglob("*.mid"))
    names = [f"user/{p.relative_to(root).as_posix()}" for p in oneills]
    (root / "again").mkdir()
    for i, p in enumerate(oneills):  # a variant of each O'Neill's tune (its last note dropped) in another collection
        score = symusic.Score(str(p))
        score.tracks[0].notes.pop()
        score.dump_midi(str(root / "again" / f"{i:04d}.mid"))

    def sides(where, **kw):
        dm = make_dm(where, tmp_path / "cache", test_frac=0.3, **kw)
        return {n: s for s, fl in dm.source_files().items() for n, _ in fl}

    everything = sides(root)
    pool = sides(root, include=["user/oneills1850/", "user/again/"])
    alone = sides(root, include=["user/oneills1850/"])
    assert sorted(alone) == sorted(names)
    assert all(n.startswith(("user/oneills1850/", "user/again/")) for n in pool)
    assert len(pool) == 2 * len(oneills) < len(everything)
    assert {"train", "test"} <= set(alone.values())
    assert all(alone[n] == pool[n] == everything[n] for n in alone)
    assert all(pool[f"user/again/{i:04d}.mid"] == alone[n] for i, n in enumerate(names))  # variants together
    # the collection split on its own (a folder of O'Neill's only) moves some of them: what include avoids
    only = tmp_path / "only"
    shutil.copytree(root / "oneills1850", only / "oneills1850")
    by_itself = sides(only)
    assert any(by_itself[n] != alone[n] for n in names)


def test_include_that_matches_nothing_is_a_clear_error(real_midi_dir, tmp_path):
    dm = make_dm(real_midi_dir, tmp_path / "cache", include=["user/folk/oneils1850/"])
    with pytest.raises(ConfigError, match=r"data.include: \['user/folk/oneils1850/'\] match no file"):
        dm.source_files()
    with pytest.raises(ConfigError, match="non-empty list of name prefixes"):
        make_dm(real_midi_dir, tmp_path / "cache", include=[])
