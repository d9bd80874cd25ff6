"""musicgen.audio: real tunes and generated samples rendered with the system's General MIDI SoundFont
(duration, sample rate, not silent), the SoundFont search, and what happens without one: one log
line and MIDI all the same, or a ConfigError for an explicit path that does not exist."""

import json
import logging

import numpy as np
import pytest
import symusic
from helpers import gen_cfg, run_cli

from musicgen import audio
from musicgen.audio import AudioRenderer, find_soundfont, renderer_from_config
from musicgen.cli.generate import run_generation
from musicgen.errors import ConfigError

sf = pytest.importorskip("soundfile", reason="soundfile writes the audio files (a main dependency)")

SOUNDFONT = find_soundfont()
needs_soundfont = pytest.mark.skipif(
    SOUNDFONT is None,
    reason="no General MIDI SoundFont in /usr/share/sounds/sf2, /usr/share/sounds/sf3 or /usr/share/soundfonts "
           "(apt-get install fluid-soundfont-gm)",
)
RELEASE_TAIL = 3.0  # seconds the last notes may ring on after the MIDI's end (the synthesiser's release)


def seconds(midi_path) -> float:
    return symusic.Score(str(midi_path), ttype="second").end()


def rms(path) -> float:
    data, _ = sf.read(str(path), dtype="float32")
    return float(np.sqrt(np.mean(data**2)))


@needs_soundfont
@pytest.mark.parametrize("sample_rate", [44100, 22050])
def test_real_tune_renders_to_its_length_at_the_rate_and_is_not_silent(folk_midi_files, tmp_path, sample_rate):
    midi = folk_midi_files[0]  # a real folk tune exported from music21's corpus
    renderer = AudioRenderer(SOUNDFONT, sample_rate, formats=("flac", "wav", "ogg"))
    written = renderer.write(midi, tmp_path / "tune")
    assert written == {"flac": "tune.flac", "wav": "tune.wav", "ogg": "tune.ogg"}
    end = seconds(midi)
    assert end > 5
    for name in written.values():
        info = sf.info(str(tmp_path / name))
        assert info.samplerate == sample_rate and info.channels == 2
        assert end <= info.duration <= end + RELEASE_TAIL, (name, info.duration, end)
        assert rms(tmp_path / name) > 0.01, name  # audible, not a silent file of the right length
    flac, _ = sf.read(str(tmp_path / "tune.flac"), dtype="int16")
    wav, _ = sf.read(str(tmp_path / "tune.wav"), dtype="int16")
    assert np.array_equal(flac, wav)  # FLAC is lossless: the same 16-bit samples
    # sound where the notes are: the first second after the first note is audible, the tail fades
    data, _ = sf.read(str(tmp_path / "tune.wav"), dtype="float32")
    first = symusic.Score(str(midi), ttype="second").tracks[0].notes[0].time
    start = int(first * sample_rate)
    assert np.sqrt(np.mean(data[start : start + sample_rate] ** 2)) > 0.01
    assert np.abs(data).max() < 1.0  # never clipped
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


@needs_soundfont
@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_generate_writes_audio_beside_each_midi(smoke_run, tmp_path):
    report = run_generation(gen_cfg(smoke_run, tmp_path, num_samples=2, max_new_tokens=48))
    written = [s for s in report["samples"] if "midi" in s]
    assert written
    for s in written:
        assert s["audio"] == {"flac": s["midi"].replace(".mid", ".flac"), "wav": s["midi"].replace(".mid", ".wav")}
        end = seconds(tmp_path / s["midi"])
        for name in s["audio"].values():
            info = sf.info(str(tmp_path / name))
            assert info.samplerate == 44100 and end <= info.duration <= end + RELEASE_TAIL
            assert rms(tmp_path / name) > 0.005
    saved = json.loads((tmp_path / "generation.json").read_text())
    assert [s.get("audio") for s in saved["samples"]] == [s.get("audio") for s in report["samples"]]


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_without_a_soundfont_generation_logs_one_line_and_writes_midi(smoke_run, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(audio, "SEARCH_DIRS", (str(tmp_path / "no-soundfonts-here"),))
    monkeypatch.setattr(audio, "_warned", set())
    with caplog.at_level(logging.INFO, logger="musicgen"):
        for out in ("a", "b"):  # twice in one process: still one line
            report = run_generation(gen_cfg(smoke_run, tmp_path / out, num_samples=2, max_new_tokens=24))
            assert all("audio" not in s for s in report["samples"])
            assert any("midi" in s for s in report["samples"])
            assert list((tmp_path / out).glob("*.mid")) and not list((tmp_path / out).glob("*.flac"))
    lines = [r.getMessage() for r in caplog.records if "SoundFont" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "apt-get install fluid-soundfont-gm" in lines[0] and "audio.soundfont=" in lines[0]


def test_audio_can_be_switched_off():
    assert renderer_from_config({"enabled": False, "soundfont": "/does/not/matter.sf2"}) is None


def test_an_explicit_soundfont_that_does_not_exist_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.sf2"
    # the checkpoint does not exist either: the setting is checked before anything is loaded
    cfg = gen_cfg(tmp_path / "no-run", tmp_path, **{"audio.soundfont": str(missing)})
    with pytest.raises(ConfigError, match=r"audio.soundfont=.*nope.sf2: no such file"):
        run_generation(cfg)
    proc = run_cli("musicgen.generate", [f"ckpt_path={tmp_path}/no-run", f"audio.soundfont={missing}"], timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: audio.soundfont=") and "Traceback" not in proc.stderr


def test_bad_formats_and_rates_are_config_errors(tmp_path):
    font = tmp_path / "x.sf2"
    font.write_bytes(b"")
    with pytest.raises(ConfigError, match="audio.formats"):
        AudioRenderer(font, 44100, formats=("mp3",))
    with pytest.raises(ConfigError, match="audio.sample_rate"):
        AudioRenderer(font, 100)


def test_soundfont_search_prefers_general_midi_sets(tmp_path):
    a, b = tmp_path / "sf2", tmp_path / "sf3"
    a.mkdir()
    b.mkdir()
    assert find_soundfont([a, b, tmp_path / "missing"]) is None
    (a / "readme.txt").write_text("not a SoundFont")
    (a / "zzz.sf2").write_bytes(b"")
    assert find_soundfont([a, b]) == a / "zzz.sf2"  # any .sf2/.sf3 when no known name is there
    (b / "TimGM6mb.sf2").write_bytes(b"")
    (b / "FluidR3_GM.sf2").write_bytes(b"")
    assert find_soundfont([a, b]) == b / "FluidR3_GM.sf2"


@needs_soundfont
def test_a_score_without_notes_is_refused_clearly():
    empty = symusic.Score(480)
    empty.tracks.append(symusic.Track(name="piano", program=0))
    with pytest.raises(ValueError, match="without notes"):
        AudioRenderer(SOUNDFONT).render(empty)


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_evaluate_writes_real_pieces_to_listen_to(smoke_run, tmp_path):
    from musicgen.config import compose
    from musicgen.evaluation.run import evaluate

    evaluate(compose("evaluate", [f"ckpt_path={smoke_run}", f"output_dir={tmp_path}", "num_samples=1",
                                  "max_new_tokens=8", "bootstrap=10", "real_examples=2"]))
    real = json.loads((tmp_path / "real" / "real.json").read_text())
    assert real["split"] == "test" and 1 <= len(real["pieces"]) <= 2
    for p in real["pieces"]:
        assert "@" not in p["name"]  # an untransposed piece
        assert symusic.Score(str(tmp_path / "real" / p["midi"])).note_num() == p["notes"] > 0
        assert (tmp_path / "real" / p["png"]).stat().st_size > 0
        if SOUNDFONT is not None:
            info = sf.info(str(tmp_path / "real" / p["audio"]["flac"]))
            assert info.duration >= seconds(tmp_path / "real" / p["midi"])
