"""Where MIDI comes from: user MIDI listing, MAESTRO splits and the errors for missing paths."""

from __future__ import annotations

import csv
import os
import shutil

import pytest

from musicgen.data.sources import DataPathError, list_maestro, list_midi_files, load_manifest


def test_list_midi_files_suffixes_nesting_and_order(tmp_path, folk_midi_files):
    midi = folk_midi_files[0].read_bytes()
    for rel in ("b.MID", "a.midi", "deep/er/c.mid", "deep/d.Midi", "notes.txt", "e.mid.bak", ".hidden.mid",
                ".cache/f.mid"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(midi)
    found = [p.relative_to(tmp_path).as_posix() for p in list_midi_files(tmp_path)]
    assert found == ["a.midi", "b.MID", "deep/d.Midi", "deep/er/c.mid"]


def test_missing_paths_say_how_to_set_them(tmp_path):
    with pytest.raises(DataPathError, match=r"data.root=/nonexistent does not exist; set data.root=/path/to/your/midi"):
        list_midi_files("/nonexistent")
    with pytest.raises(FileNotFoundError, match="data.maestro_root=/nowhere does not exist"):
        list_maestro("/nowhere")
    with pytest.raises(DataPathError, match="maestro-v3.0.0.csv"):
        list_maestro(tmp_path)
    with pytest.raises(DataPathError, match="prepare"):
        load_manifest(tmp_path)


def test_list_maestro_honours_the_csv_split(tmp_path, folk_midi_files):
    rows = [("train", "2004/a.midi"), ("validation", "2004/b.midi"), ("train", "2006/c.midi"),
            ("test", "2006/d.midi"), ("train", "2004/0.midi")]
    with open(tmp_path / "maestro-v3.0.0.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["canonical_composer", "canonical_title", "split", "year", "midi_filename",
                    "audio_filename", "duration"])
        for (split, name), src in zip(rows, folk_midi_files):
            (tmp_path / name).parent.mkdir(exist_ok=True)
            shutil.copyfile(src, tmp_path / name)
            w.writerow(["Bach, J.S.", "Tune, with comma", split, name[:4], name, name[:-5] + ".wav", "1.0"])
    splits = list_maestro(tmp_path)
    rel = {k: [p.relative_to(tmp_path).as_posix() for p in v] for k, v in splits.items()}
    assert rel == {"train": ["2004/0.midi", "2004/a.midi", "2006/c.midi"], "validation": ["2004/b.midi"],
                   "test": ["2006/d.midi"]}

    os.remove(tmp_path / "2006/d.midi")
    with pytest.raises(DataPathError, match="1 MIDI files named in maestro-v3.0.0.csv are missing"):
        list_maestro(tmp_path)
