"""The export of music21's embedded corpora to MIDI: source files, ABC splitting, resumable
atomic export and its manifest.

Exports run against a tiny stand-in for music21's corpus folder (``corpus_root``) built from
real corpus files, so they take seconds; the full export is one ``slow`` test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import symusic

from musicgen.data import corpus
from musicgen.data.corpus import export_corpus, list_sources, music21_corpus_dir
from musicgen.data.music21_midi import split_abc_tunes
from musicgen.data.sources import list_midi_files, load_manifest
from musicgen.data.split import subsample

M21 = music21_corpus_dir()
ONEILLS = M21 / "oneills1850" / "0001-0050.abc"
EMPTY_TUNE = "X:99\nT:A tune without notes\nM:4/4\nK:G\n"


def _abc_head(path: Path, n: int) -> str:
    """The first ``n`` tunes of an ABC file, as ABC text."""
    text = path.read_text()
    cut = [i for i, line in enumerate(text.splitlines(keepends=True)) if line.startswith("X:")]
    return "".join(text.splitlines(keepends=True)[: cut[n]]) if n < len(cut) else text


@pytest.fixture
def fake_m21(tmp_path) -> Path:
    """A music21-like corpus folder: 6 O'Neill's tunes + one without notes, a one-tune Ryan's file,
    two chorales and BWV 846 (a prelude, to be left out)."""
    root = tmp_path / "m21corpus"
    (root / "oneills1850").mkdir(parents=True)
    (root / "oneills1850" / "small.abc").write_text(_abc_head(ONEILLS, 6) + "\n" + EMPTY_TUNE)
    (root / "ryansMammoth").mkdir()
    shutil.copy(M21 / "ryansMammoth" / "7thRegimentReel.abc", root / "ryansMammoth")
    (root / "bach").mkdir()
    for name in ("bwv66.6.mxl", "bwv1.6.mxl", "bwv846.mxl", "bwv277.krn"):
        shutil.copy(M21 / "bach" / name, root / "bach")
    return root


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------ sources


def test_real_corpus_sources():
    folk = list_sources("folk")
    assert len(folk) == 31 + 39 + 6 + 1059 + 2
    assert folk[0].rel == "essenFolksong/altdeu10.abc" and folk[0].key == "essenFolksong/altdeu10"
    chorales = list_sources("chorales")
    names = {s.key for s in chorales}
    assert "bwv66.6" in names and "bwv846" not in names
    assert len(chorales) == 409 and all(s.path.suffix in (".mxl", ".xml") for s in chorales)
    with pytest.raises(ValueError, match="folk"):
        list_sources("nope")


def test_split_abc_tunes_keeps_every_tune_and_the_file_header():
    tunes = split_abc_tunes(ONEILLS.read_text())
    assert len(tunes) == 50 and all(t.lstrip().startswith("X:") for t in tunes)
    # tunes sharing a reference number stay two tunes (music21's own split would merge them)
    header = "% file header\nO:Somewhere\n"
    twins = split_abc_tunes(header + "X:1\nK:C\nCDE|\nX:1\nK:C\nEDC|\n")
    assert len(twins) == 2 and all(t.startswith(header) for t in twins)
    assert "CDE" in twins[0] and "EDC" in twins[1]


# ------------------------------------------------------------------------------ export


def test_folk_export_beats_the_time_signature_trap_and_keeps_the_melody(tmp_path):
    from music21 import exceptions21, harmony, midi

    tune0 = corpus.parse_abc_tune(split_abc_tunes(ONEILLS.read_text())[0])
    # music21's own writer fails on this tune (the same TimeSignature object in two measures)
    with pytest.raises(exceptions21.StreamException, match="already found"):
        midi.translate.streamToMidiFile(corpus.parse_abc_tune(split_abc_tunes(ONEILLS.read_text())[0]))

    names, failed, _ = corpus.export_abc_file(ONEILLS, tmp_path, set(range(3)))
    assert names == ["0000.mid", "0001.mid", "0002.mid"] and failed == []

    part = tune0.parts[0].stripTies(matchByPitch=True)
    want = sorted(
        (round(float(n.getOffsetInHierarchy(part)), 3), p.midi)
        for n in part.recurse().notes
        if not isinstance(n, harmony.Harmony) and n.duration.quarterLength > 0
        for p in n.pitches
    )
    midi_file = symusic.Score(str(tmp_path / "0000.mid"))
    tpq = midi_file.ticks_per_quarter
    got = sorted((round(n.time / tpq, 3), n.pitch) for t in midi_file.tracks for n in t.notes)
    assert len(got) > 50 and got == want
    assert [ts.numerator for ts in midi_file.time_signatures][:1] == [2]  # the tune's 2/4 survives


def test_export_corpus_files_manifest_and_failures(tmp_path, fake_m21):
    out = tmp_path / "folk"
    manifest = export_corpus("folk", out, workers=1, progress=False, corpus_root=fake_m21)
    want = [f"oneills1850/small/{i:04d}.mid" for i in range(6)] + ["ryansMammoth/7thRegimentReel/0000.mid"]
    assert manifest.files == want
    assert manifest.failed == [{"source": "oneills1850/small.abc#0006", "reason": "ValueError: no notes"}]
    assert manifest.complete and manifest.sources_done == 2
    assert all(p.is_file() for p in manifest.paths)

    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["files"] == want and on_disk["failed"] == manifest.failed
    assert load_manifest(out).files == want
    assert sorted(p.relative_to(out).as_posix() for p in list_midi_files(out)) == want


def test_chorales_keep_all_parts_and_skip_non_chorales(tmp_path, fake_m21):
    manifest = export_corpus("chorales", tmp_path / "ch", workers=1, progress=False, corpus_root=fake_m21)
    assert manifest.files == ["bwv1.6.mid", "bwv66.6.mid"] and manifest.failed == []
    tracks = [t for t in symusic.Score(str(tmp_path / "ch" / "bwv66.6.mid")).tracks if t.notes]
    assert len(tracks) == 4  # soprano, alto, tenor, bass


def test_rerun_parses_nothing_and_a_deleted_record_redoes_only_its_source(tmp_path, fake_m21, monkeypatch):
    out = tmp_path / "folk"
    export_corpus("folk", out, workers=1, progress=False, corpus_root=fake_m21)
    before = _mtimes(out)

    parsed = []
    real_parse = corpus.parse_abc_tune
    monkeypatch.setattr(corpus, "parse_abc_tune", lambda text: parsed.append(text) or real_parse(text))
    again = export_corpus("folk", out, workers=1, progress=False, corpus_root=fake_m21)
    assert parsed == [] and _mtimes(out) == before and len(again.files) == 7

    (out / ".parts" / "ryansMammoth" / "7thRegimentReel.json").unlink()
    export_corpus("folk", out, workers=1, progress=False, corpus_root=fake_m21)
    assert len(parsed) == 1 and "7th Regiment" in parsed[0]
    changed = {p for p, t in _mtimes(out).items() if before.get(p) != t}
    assert changed == {out / "ryansMammoth/7thRegimentReel/0000.mid", out / ".parts/ryansMammoth/7thRegimentReel.json"}


def test_limit_and_untrusted_leftovers_of_a_killed_run(tmp_path, fake_m21):
    out = tmp_path / "folk"
    first = export_corpus("folk", out, workers=1, limit=1, progress=False, corpus_root=fake_m21)
    assert first.sources_done == 1 and not first.complete
    assert all(f.startswith("oneills1850/") for f in first.files)

    # A run killed inside the Ryan's file: one tune written, a temp file, no record.
    ryan = out / "ryansMammoth" / "7thRegimentReel"
    ryan.mkdir(parents=True)
    (ryan / "0000.mid").write_bytes(b"half a file")
    (ryan / ".0000.mid.x1y2.tmp").write_bytes(b"junk")
    assert ryan / ".0000.mid.x1y2.tmp" not in list_midi_files(out)
    # and a record whose file vanished is not trusted either
    (out / "oneills1850" / "small" / "0003.mid").unlink()

    done = export_corpus("folk", out, workers=1, progress=False, corpus_root=fake_m21)
    assert done.complete and len(done.files) == 7
    assert (out / "oneills1850" / "small" / "0003.mid").is_file()
    assert (ryan / "0000.mid").read_bytes().startswith(b"MThd")
    assert not list(ryan.glob("*.tmp"))
    assert not list(out.rglob("*.tmp"))


def test_max_files_exports_exactly_what_a_capped_run_trains_on(tmp_path, fake_m21, monkeypatch):
    """``max_files``: the pieces ``subsample`` picks from the complete export, converting no other
    tune (a tune that fails is replaced by the next in the same order); a later full export
    converts only the rest, and the manifest says partial until then."""
    full = export_corpus("folk", tmp_path / "full", workers=1, progress=False, corpus_root=fake_m21)
    named = [(f"folk/{f}", f) for f in full.files]
    parsed = []
    real_parse = corpus.parse_abc_tune
    monkeypatch.setattr(corpus, "parse_abc_tune", lambda text: parsed.append(text) or real_parse(text))
    covered = {}
    for seed, cap in ((0, 2), (1, 5), (2, 3)):
        out = tmp_path / f"cap{cap}"
        parsed.clear()
        part = export_corpus("folk", out, workers=1, progress=False, corpus_root=fake_m21, max_files=cap, seed=seed)
        assert part.files == sorted(f for _, f in subsample(named, cap, seed))
        assert len(parsed) == cap + len(part.failed)  # only the chosen tunes (and failed ones) were parsed
        assert not part.complete and part.sources_partial >= 1 and load_manifest(out).sources_partial >= 1
        again = export_corpus("folk", out, workers=1, progress=False, corpus_root=fake_m21, max_files=cap, seed=seed)
        assert again.files == part.files and len(parsed) == cap + len(part.failed)  # nothing redone
        covered[cap] = cap + len(part.failed)

    parsed.clear()
    rest = export_corpus("folk", tmp_path / "cap5", workers=1, progress=False, corpus_root=fake_m21)
    assert rest.complete and rest.sources_partial == 0 and rest.files == full.files and rest.failed == full.failed
    assert len(parsed) == 8 - covered[5]  # 8 tunes in all: only those not converted before


def test_parallel_export_matches_serial(tmp_path, fake_m21):
    serial = export_corpus("folk", tmp_path / "a", workers=1, progress=False, corpus_root=fake_m21)
    pooled = export_corpus("folk", tmp_path / "b", workers=2, progress=False, corpus_root=fake_m21)
    assert pooled.files == serial.files and pooled.failed == serial.failed
    for f in serial.files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_concurrent_exports_into_one_fresh_directory_wait_for_each_other(tmp_path, fake_m21):
    """The leaderboard's first two runs on a fresh data directory export the same corpus at once:
    the second waits for the first's lock (each used to delete the other's temp files), and both
    return the manifest a lone export gives."""
    import multiprocessing as mp
    import threading

    from musicgen.fs import exclusive

    out = tmp_path / "folk"
    waiting = threading.Thread(target=export_corpus, args=("folk", out),
                               kwargs={"workers": 1, "progress": False, "corpus_root": fake_m21})
    with exclusive(out):
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive() and not list(out.rglob("*.mid"))  # blocked, wrote nothing
    waiting.join()
    assert load_manifest(out).complete

    shared = tmp_path / "shared"
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        both = pool.starmap(_export_folk, [(shared, fake_m21)] * 2)
    alone = export_corpus("folk", tmp_path / "alone", workers=1, progress=False, corpus_root=fake_m21)
    assert both[0] == both[1] == (alone.files, alone.failed)
    assert not list(shared.rglob("*.tmp"))


def _export_folk(out: Path, root: Path) -> tuple[list[str], list]:
    m = export_corpus("folk", out, workers=1, progress=False, corpus_root=root)
    return m.files, m.failed


def test_prepare_entry_point(tmp_path, monkeypatch):
    from musicgen.cli import prepare
    from musicgen.config import compose
    from musicgen.runtime import project_root

    monkeypatch.delenv("MUSICGEN_DATA_DIR", raising=False)
    default = compose("prepare")
    cfg = compose("prepare", [f"data_dir={tmp_path}", "corpora=[chorales]", "limit=1", "workers=1", "progress=false"])
    checkout = Path(prepare.__file__).resolve().parents[2]
    assert Path(default.data_dir) == Path(project_root()) / "data" == checkout / "data"
    assert list(default.corpora) == ["folk", "chorales"]
    assert prepare.prepare(cfg) == {"chorales": 1}
    assert load_manifest(tmp_path / "chorales").files == ["bwv1.6.mid"]


@pytest.mark.slow
def test_full_export(tmp_path_factory):
    """The whole embedded corpus: >= 12,500 folk tunes (>= 97% of them) and the chorales."""
    out = tmp_path_factory.mktemp("full")
    folk = export_corpus("folk", out / "folk", progress=False)
    assert folk.complete and len(folk.files) >= 12_500
    assert len(folk.files) >= 0.97 * (len(folk.files) + len(folk.failed))
    chorales = export_corpus("chorales", out / "chorales", progress=False)
    assert chorales.complete and len(chorales.files) >= 400
