"""Shared fixtures: small real MIDI corpora, exported from music21's corpus once per test session,
a prepared data directory made from them, smoke-run overrides and trained smoke runs.

Everything is written under pytest's temporary folders, never into the repository. Session
fixtures are shared by many tests: treat their files as read-only (copy before changing). Helpers
that are not fixtures live in ``helpers.py``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from helpers import smoke_override_list

#: The slowest test files (set-up included; ``make test`` lists the slowest tests), run first: with
#: ``--dist loadfile`` a worker handed one of them last would keep the run going alone at the end.
SLOW_FILES = ("experiments/test_leaderboard.py", "test_demo.py", "experiments/speed/test_ttq.py",
              "training/test_train_smoke.py", "experiments/test_seeds.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:  # the slowest first; sorted() is stable, so each file keeps its order
        return next((i for i, f in enumerate(SLOW_FILES) if item.nodeid.startswith(f"tests/{f}::")), len(SLOW_FILES))

    items[:] = sorted(items, key=rank)


#: Tunes exported for ``real_midi_dir``: (music21 corpus file, how many tunes from its start).
#: O'Neill's tune 0 trips music21's "TimeSignature ... already found" MIDI-writer bug, so the
#: fixture goes through the same workaround as the full export.
FOLK_SOURCES = (("oneills1850/0001-0050.abc", 8), ("essenFolksong/altdeu10.abc", 4))
CHORALES = ("bwv66.6.mxl", "bwv1.6.mxl", "bwv10.7.mxl")  # with seed 0 one lands in train

#: The unusable files of ``broken_midi_dir`` and the reason ``read_score`` gives for each.
#: Every other file there is usable and has "good" in its name.
BROKEN_MIDI = {
    "truncated.mid": "unreadable MIDI",
    "empty.mid": "empty file",
    "random_bytes.mid": "not a MIDI file",
    "text.mid": "not a MIDI file",
    "drums_only.mid": "drums only",
    "no_notes.mid": "no notes",
}


@pytest.fixture(scope="session")
def real_midi_dir(tmp_path_factory) -> Path:
    """12 folk tunes under ``folk/<collection>/<abc-stem>/<index>.mid`` (melody only) and three Bach
    chorales under ``chorales/<bwv>.mid`` (all parts), made by the real export functions."""
    from musicgen.data.corpus import export_abc_file, export_score_file, music21_corpus_dir

    root = tmp_path_factory.mktemp("real_midi")
    m21 = music21_corpus_dir()
    for rel, n in FOLK_SOURCES:
        names, failed, _ = export_abc_file(m21 / rel, root / "folk" / rel.removesuffix(".abc"), set(range(n)))
        assert not failed and len(names) == n, failed
    for name in CHORALES:
        export_score_file(m21 / "bach" / name, root / "chorales" / f"{name.removesuffix('.mxl')}.mid")
    return root


@pytest.fixture(scope="session")
def folk_midi_files(real_midi_dir) -> list[Path]:
    return sorted((real_midi_dir / "folk").rglob("*.mid"))


@pytest.fixture(scope="session")
def chorale_midi_files(real_midi_dir) -> list[Path]:
    return sorted((real_midi_dir / "chorales").rglob("*.mid"))


@pytest.fixture(scope="session")
def broken_midi_names() -> dict[str, str]:
    """File name -> expected reason (a prefix of it) for the unusable files of ``broken_midi_dir``."""
    return dict(BROKEN_MIDI)


@pytest.fixture(scope="session")
def broken_midi_dir(tmp_path_factory, folk_midi_files) -> Path:
    """A folder mixing the unusable files of ``BROKEN_MIDI`` with three good tunes (``good_<i>.mid``)."""
    import symusic

    root = tmp_path_factory.mktemp("broken_midi")
    for i, f in enumerate(folk_midi_files[:3]):
        shutil.copyfile(f, root / f"good_{i}.mid")
    real = folk_midi_files[0].read_bytes()
    (root / "truncated.mid").write_bytes(real[: len(real) // 2])
    (root / "empty.mid").write_bytes(b"")
    (root / "random_bytes.mid").write_bytes(b"\x00" + random.Random(0).randbytes(999))
    (root / "text.mid").write_text("This is a text file, not MIDI.\n")

    drums = symusic.Score(480)
    track = symusic.Track(name="drums", program=0, is_drum=True)  # written on channel 10
    track.notes.extend(symusic.Note(i * 240, 120, 36 + i % 3, 100) for i in range(16))
    drums.tracks.append(track)
    drums.dump_midi(str(root / "drums_only.mid"))

    silent = symusic.Score(480)  # a valid header and track: tempo and program, no notes
    silent.tempos.append(symusic.Tempo(0, 120.0))
    silent.tracks.append(symusic.Track(name="silent", program=0))
    silent.dump_midi(str(root / "no_notes.mid"))

    assert sorted(p.name for p in root.iterdir() if "good" not in p.name) == sorted(BROKEN_MIDI)
    return root


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory, real_midi_dir, folk_midi_files, chorale_midi_files) -> Path:
    """A ``paths.data_dir`` laid out like ``musicgen.prepare``'s output, from the real test tunes."""
    root = tmp_path_factory.mktemp("prepared")
    for name, files in (("folk", folk_midi_files), ("chorales", chorale_midi_files)):
        (root / name).mkdir()
        rels = []
        for i, f in enumerate(files):  # folk keeps its collections' folders, as the export lays them out
            rel = f.relative_to(real_midi_dir / "folk").as_posix() if name == "folk" else f"{i:03d}_{f.name}"
            (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / name / rel)
            rels.append(rel)
        (root / name / "manifest.json").write_text(json.dumps({"files": rels, "failed": []}))
    return root


@pytest.fixture
def smoke_overrides(tmp_path, prepared_data_dir) -> list[str]:
    """``helpers.smoke_override_list`` for this test's ``tmp_path``: the run lands in ``tmp_path/run``."""
    return smoke_override_list(tmp_path, prepared_data_dir)


@pytest.fixture(scope="session")
def smoke_run(request, tmp_path_factory, prepared_data_dir) -> Path:
    """A trained smoke run directory per version (parametrise indirectly with the version; v7 if not),
    trained once per session: pytest groups the tests by version. Read-only, like every session fixture."""
    from musicgen.config import compose
    from musicgen.training.fit import train

    version = getattr(request, "param", "v7")
    tmp = tmp_path_factory.mktemp(f"run_{version}")
    train(compose("train", [f"+version={version}", *smoke_override_list(tmp, prepared_data_dir)]))
    return tmp / "run"


#: Overrides of ``control_run`` after the smoke overrides: a key prefix and bar infilling in one run,
#: with tests/control/test_infilling.py's window (a middle and its context fit in 128 tokens) and steps.
CONTROL_OVERRIDES = ("conditioning=key", "infill=bars", "data.seq_len=128", "model.max_seq_len=128",
                     "trainer.max_steps=8")


@pytest.fixture(scope="session")
def control_run(tmp_path_factory, prepared_data_dir) -> Path:
    """A V7 smoke run trained with ``conditioning=key infill=bars`` (``CONTROL_OVERRIDES``), once per
    session: the run every front end is tested on for the conditioning prefix. Read-only."""
    from musicgen.config import compose
    from musicgen.training.fit import train

    tmp = tmp_path_factory.mktemp("run_control")
    train(compose("train", ["+version=v7", *smoke_override_list(tmp, prepared_data_dir), *CONTROL_OVERRIDES]))
    return tmp / "run"
