"""Bad and unusual MIDI through the whole pipeline: each file gets a clear reason to be skipped
(one warning, listed in the cache's meta.json) or is used in full; nothing else is lost."""

import json
import logging
import re
import shutil
import struct

import mido
import pytest

from musicgen.config import compose
from musicgen.midi_io import BadMidiError, read_score
from musicgen.tokenizers import RemiTokenizer
from musicgen.training.fit import train

#: unusual files that are skipped, and the start of their reason
UNSUPPORTED = {"type2.mid": "MIDI format 2 (2 independent sequences)", "smpte.mid": "SMPTE time division (25 fps"}
#: unusual files that are used, and how many notes each holds
USABLE = {"type2_one_track.mid": 8, "tempo_fast.mid": 8, "tempo_slow.mid": 8, "overlap.mid": 3, "zero_length.mid": 8}


def _track(n=8, dur=240, pitch=60, tempo=500_000):
    t = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    for i in range(n):
        t.append(mido.Message("note_on", note=pitch + i % 12, velocity=80, time=0))
        t.append(mido.Message("note_off", note=pitch + i % 12, velocity=0, time=dur))
    return t


def _save(path, tracks, type=1):
    mido.MidiFile(type=type, ticks_per_beat=480, tracks=tracks).save(path)


@pytest.fixture(scope="module")
def unusual_midi_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("unusual")
    _save(root / "type2.mid", [_track(), _track(pitch=48)], type=2)
    _save(root / "type2_one_track.mid", [_track()], type=2)
    _save(root / "smpte.mid", [_track()], type=0)
    data = bytearray((root / "smpte.mid").read_bytes())
    data[12:14] = struct.pack(">h", (-25 << 8) | 40)  # 25 fps, 40 ticks per frame
    (root / "smpte.mid").write_bytes(bytes(data))
    _save(root / "tempo_fast.mid", [_track(tempo=1)], type=0)  # 60,000,000 bpm
    _save(root / "tempo_slow.mid", [_track(tempo=0xFFFFFF)], type=0)  # 3.6 bpm
    overlap = mido.MidiTrack()  # two sounding C4s at once, then a D4
    for kind, note, dt in [("note_on", 60, 0), ("note_on", 60, 120), ("note_off", 60, 120), ("note_off", 60, 120),
                           ("note_on", 62, 0), ("note_off", 62, 240)]:
        overlap.append(mido.Message(kind, note=note, velocity=80 if kind == "note_on" else 0, time=dt))
    _save(root / "overlap.mid", [overlap], type=0)
    zero = mido.MidiTrack()
    for i in range(8):
        zero.append(mido.Message("note_on", note=60 + i, velocity=80, time=240 if i else 0))
        zero.append(mido.Message("note_off", note=60 + i, velocity=0, time=0))
    _save(root / "zero_length.mid", [zero], type=0)
    return root


def test_each_unusual_file_is_read_or_refused_with_its_reason(unusual_midi_dir):
    for name, reason in UNSUPPORTED.items():
        with pytest.raises(BadMidiError, match=re.escape(f"{name}: {reason}")):
            read_score(unusual_midi_dir / name)
    tok = RemiTokenizer()
    for name, n_notes in USABLE.items():
        score = read_score(unusual_midi_dir / name)
        assert score.note_num() == n_notes, name
        tokens = tok.tokens(tok.encode(score))
        assert sum(t.startswith("Pitch_") for t in tokens) == n_notes, name  # every note kept
        tempos = [float(t.split("_")[1]) for t in tokens if t.startswith("Tempo_")]
        assert all(40 <= q <= 250 for q in tempos), name  # extreme tempos clamp to the range


def test_a_file_with_over_100000_notes_is_used_in_full(tmp_path):
    path = tmp_path / "long.mid"
    _save(path, [_track(n=100_001, dur=10)], type=0)
    score = read_score(path)
    assert score.note_num() == 100_001
    tok = RemiTokenizer()
    ids = tok.encode(score)
    assert tok.decode(ids).note_num() == 100_001


def test_broken_and_unusual_files_through_prepare_tokenise_and_train(
    tmp_path, folk_midi_files, broken_midi_dir, broken_midi_names, unusual_midi_dir, caplog
):
    corpus = tmp_path / "corpus"
    shutil.copytree(broken_midi_dir, corpus / "broken")
    shutil.copytree(unusual_midi_dir, corpus / "unusual")
    for i, f in enumerate(folk_midi_files):
        shutil.copy(f, corpus / f"tune_{i:02d}.mid")
    before = {p: p.read_bytes() for p in corpus.rglob("*.mid")}
    expected = ({f"broken/{n}": r for n, r in broken_midi_names.items()}
                | {f"unusual/{n}": r for n, r in UNSUPPORTED.items()})

    good = [p for p in sorted(corpus.rglob("*.mid")) if p.relative_to(corpus).as_posix() not in expected]

    caplog.clear()
    cfg = compose("train", ["+version=v6", "preset=smoke", f"data.root={corpus}", "data.max_files=null",
                            "data.val_frac=0.25", f"paths.cache_dir={tmp_path}/cache",
                            f"paths.output_dir={tmp_path}/run", f"paths.log_dir={tmp_path}/outputs",
                            "callbacks.progress_bar=null"])
    metrics = train(cfg)
    assert metrics["global_step"] == 4

    meta = json.loads(next((tmp_path / "cache").glob("*/meta.json")).read_text())
    reasons = {s["file"].removeprefix("user/"): s["reason"] for s in meta["skipped"]}
    assert reasons.keys() == expected.keys()
    for name, reason in expected.items():
        assert reason in reasons[name], (name, reasons[name])
        assert sum(name in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records) == 1, name
    used = {n.removeprefix("user/") for s in meta["splits"].values() for n in s["names"] if "@" not in n}
    assert used == {p.relative_to(corpus).as_posix() for p in good}  # every usable file is in a split
    assert {p: p.read_bytes() for p in corpus.rglob("*.mid")} == before  # input never modified
