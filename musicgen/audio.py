"""Audio for listening to MIDI: a score rendered with a General MIDI SoundFont, written as FLAC and WAV.

The synthesiser is symusic's (``symusic.Synthesizer``, the Prestosynth SF2/SF3 engine): symusic is
already what reads and writes every MIDI file here, so audio needs no further Python package for
synthesis, no system library and no subprocess, and it renders the very ``Score`` object that
``generate`` decodes (a 15 s folk tune in well under a second on one core). FluidSynth would need
its C library from the system (pyfluidsynth) or a command-line program; ``tinysoundfont`` requires
PyAudio, which builds against PortAudio's headers. symusic 0.6.0's binding of ``render`` cannot hand
its buffer back to Python ("Unable to convert function return value"), so the package requires
``symusic!=0.6.0``; on that release this module logs one line and writes no audio.

Files are written with ``soundfile`` (libsndfile, bundled in its wheel): FLAC, lossless at about
half the size of WAV and played by every current browser (the gallery's ``<audio>``), and 16-bit
WAV for any other player. Writes are atomic (``musicgen.fs``).

The SoundFont is ``audio.soundfont`` when given (a missing file is a ``ConfigError``), else the
first found in the usual system folders (``SEARCH_DIRS``: where Debian's fluid-soundfont-gm,
timgm6mb-soundfont and musescore-general-soundfont install). Nothing is ever downloaded (symusic's
``Synthesizer(None)`` would download one: a path is always passed). Without a SoundFont a run goes
on without audio and says so in one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import symusic

from musicgen.errors import ConfigError
from musicgen.fs import atomic_path

log = logging.getLogger(__name__)

#: Where SoundFonts are searched for, in order, when ``audio.soundfont`` is not given.
SEARCH_DIRS: tuple[str, ...] = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts")
#: Names preferred, in order, among the files found (General MIDI sets, largest and best first);
#: any other ``*.sf2`` / ``*.sf3`` there comes after them, by name.
PREFERRED = ("FluidR3_GM.sf2", "MuseScore_General.sf3", "MuseScore_General.sf2", "default-GM.sf2",
             "default-GM.sf3", "TimGM6mb.sf2")
NO_SOUNDFONT = ("no General MIDI SoundFont found in {dirs}: writing no audio "
                "(apt-get install fluid-soundfont-gm, or set audio.soundfont=/path/to.sf2)")
#: soundfile format and subtype of each file kind written.
FORMATS = {"flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"), "wav": ("WAV", "PCM_16")}

BLOCK = 1 << 15  # frames handed to libsndfile per write
_warned: set[str] = set()  # one line per process for each reason audio is off


def find_soundfont(dirs: Iterable[str | Path] | None = None) -> Path | None:
    """The first usable SoundFont in ``dirs`` (default ``SEARCH_DIRS``): a ``PREFERRED`` name, else
    any ``.sf2``/``.sf3``."""
    found: list[Path] = []
    for d in map(Path, SEARCH_DIRS if dirs is None else dirs):
        if d.is_dir():
            found += sorted(p for p in d.iterdir() if p.suffix.lower() in (".sf2", ".sf3") and p.is_file())
    rank = {name.lower(): i for i, name in enumerate(PREFERRED)}
    found.sort(key=lambda p: rank.get(p.name.lower(), len(rank)))  # stable: folder order, then name
    return found[0] if found else None


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


class AudioRenderer:
    """A score or MIDI file to audio with one SoundFont, at one sample rate, stereo.

    ``render`` gives float32 samples, shape (channels, frames), scaled down only where the mix
    would clip; ``write`` writes them beside a stem (``sample_00`` -> ``sample_00.flac``...).
    """

    def __init__(self, soundfont: str | Path, sample_rate: int = 44100,
                 formats: Sequence[str] = ("flac", "wav")) -> None:
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise ConfigError(f"audio.formats={list(formats)}: choose from {sorted(FORMATS)}")
        if sample_rate < 8000:
            raise ConfigError(f"audio.sample_rate={sample_rate} must be at least 8000")
        self.soundfont = Path(soundfont)
        self.sample_rate = int(sample_rate)
        self.formats = tuple(formats)
        self._synth = symusic.Synthesizer(str(self.soundfont), self.sample_rate)

    def render(self, score: symusic.Score | str | Path) -> np.ndarray:
        if isinstance(score, (str, Path)):
            score = symusic.Score(str(score))
        if score.note_num() == 0:
            raise ValueError("a score without notes has nothing to render")
        audio = np.asarray(self._synth.render(score, stereo=True), dtype=np.float32)
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > 0.999:  # chords of loud notes add up past full scale: scale down, never clip
            audio *= 0.999 / peak
        return audio

    def write(self, score: symusic.Score | str | Path, stem: str | Path) -> dict[str, str]:
        """Render once and write ``stem.<format>`` for each format; returns {format: file name}."""
        import soundfile

        audio = self.render(score)
        pcm = np.round(audio * 32767).astype(np.int16)  # one rounding, so FLAC and WAV hold the same samples
        stem = Path(stem)
        written = {}
        for fmt in self.formats:
            path = stem.with_name(f"{stem.name}.{fmt}")
            kind, subtype = FORMATS[fmt]
            data = pcm if subtype == "PCM_16" else audio
            with atomic_path(path) as tmp, soundfile.SoundFile(str(tmp), "w", self.sample_rate, audio.shape[0],
                                                                subtype, format=kind) as f:
                for start in range(0, data.shape[1], BLOCK):  # libsndfile's Vorbis encoder crashes on
                    f.write(data[:, start : start + BLOCK].T)  # one long write; blocks are safe for all
            written[fmt] = path.name
        return written


def _synth_works(renderer: AudioRenderer) -> bool:
    """Whether this symusic can return rendered audio (0.6.0's binding cannot)."""
    probe = symusic.Score(480)
    track = symusic.Track(name="probe", program=0)
    track.notes.append(symusic.Note(0, 48, 60, 64))
    probe.tracks.append(track)
    try:
        renderer._synth.render(probe, stereo=True)
    except TypeError as e:
        _warn_once("symusic", f"symusic {symusic.__version__} cannot return rendered audio ({str(e).splitlines()[0]}): "
                              "writing no audio; pip install 'symusic>=0.5,!=0.6.0'")
        return False
    return True


def renderer_from_config(audio: Mapping[str, Any] | None) -> AudioRenderer | None:
    """The renderer an ``audio:`` config block asks for, or ``None`` (disabled, or no SoundFont).

    An explicit ``soundfont`` that does not exist is a ``ConfigError``; no SoundFont found by the
    search is one log line per process, and the caller goes on without audio.
    """
    if audio is None or not audio.get("enabled", True):
        return None
    sf = audio.get("soundfont")
    if sf:
        path = Path(str(sf)).expanduser()
        if not path.is_file():
            raise ConfigError(f"audio.soundfont={sf}: no such file (give an .sf2/.sf3 file, "
                              "or audio.soundfont=null to search the system folders)")
    else:
        path = find_soundfont()
        if path is None:
            _warn_once("soundfont", NO_SOUNDFONT.format(dirs=", ".join(map(str, SEARCH_DIRS))))
            return None
    renderer = AudioRenderer(path, audio.get("sample_rate", 44100), tuple(audio.get("formats", ("flac", "wav"))))
    return renderer if _synth_works(renderer) else None
