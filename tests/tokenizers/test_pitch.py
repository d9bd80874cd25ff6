"""Pitch-string tokeniser (V1-V5) on real folk tunes and a Bach chorale."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import symusic

from musicgen.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from musicgen.midi_io import read_score
from musicgen.tokenizers import PitchTokenizer, load_tokenizer
from musicgen.tokenizers.pitch import name_pitch, normal_order, pitch_name


@pytest.fixture(scope="module")
def folk(request, tmp_path_factory) -> list[Path]:
    """Monophonic tunes: the shared session fixture if tests/conftest.py has it, else O'Neill's."""
    try:
        return list(request.getfixturevalue("folk_midi_files"))[:8]
    except pytest.FixtureLookupError:
        pass
    from music21 import corpus, exceptions21

    out, paths = tmp_path_factory.mktemp("folk"), []
    for i, score in enumerate(corpus.parse("oneills1850/0001-0050.abc").scores[1:], start=1):
        try:
            score.write("midi", fp=str(out / f"oneills_{i:03d}.mid"))
        except exceptions21.StreamException:  # music21 MIDI-writer bug on a few tunes
            continue
        paths.append(out / f"oneills_{i:03d}.mid")
        if len(paths) == 8:
            return paths
    raise AssertionError("could not export 8 O'Neill tunes")


@pytest.fixture(scope="module")
def chorale(request, tmp_path_factory) -> Path:
    try:
        return list(request.getfixturevalue("chorale_midi_files"))[0]
    except pytest.FixtureLookupError:
        pass
    from music21 import corpus

    path = tmp_path_factory.mktemp("chorale") / "bwv66.6.mid"
    corpus.parse("bach/bwv66.6").write("midi", fp=str(path))
    return path


@pytest.fixture(scope="module")
def tok(folk, chorale) -> PitchTokenizer:
    t = PitchTokenizer()
    t.train([*folk, chorale])
    return t


def _score(notes: list[tuple[int, int]], tpq: int = 480) -> symusic.Score:
    """A one-track score from (onset tick, pitch) pairs, each an eighth note long."""
    score = symusic.Score(tpq)
    track = symusic.Track(name="t", program=0, is_drum=False)
    for time, pitch in notes:
        track.notes.append(symusic.Note(time, tpq // 2, pitch, 80))
    score.tracks.append(track)
    return score


def test_note_names_sharps_middle_c_is_c4():
    assert pitch_name(60) == "C4" and pitch_name(54) == "F#3" and pitch_name(0) == "C-1"
    assert all("b" not in pitch_name(p) for p in range(128))
    assert [name_pitch(pitch_name(p)) for p in range(128)] == list(range(128))
    with pytest.raises(ValueError):
        name_pitch("Db4")


def test_normal_order_is_music21s():
    from music21 import chord

    rng = random.Random(0)
    masks = [0b10010010001, 0b000010010001, 0b1, *(rng.randrange(1, 4096) for _ in range(40))]
    for mask in masks:
        pcs = [pc for pc in range(12) if mask >> pc & 1]
        assert list(normal_order(mask)) == chord.Chord(pcs).normalOrder, pcs


def test_chord_grouping_uses_a_32nd_grid():
    tok = PitchTokenizer()
    # G-B-D spread over 20 ticks is one chord; a note a 16th later is its own token
    score = _score([(0, 67), (10, 71), (20, 74), (120, 60), (240, 60), (240, 72), (480, 62), (480, 62)])
    assert tok.to_strings(score) == ["7.11.2", "C4", "0", "D4"]


def test_monophonic_round_trip_keeps_note_names(tok, folk):
    # some O'Neill tunes have notes stacked at one onset in the MIDI music21 writes
    mono = [p for p in folk if all("." not in s for s in tok.to_strings(p))]
    assert len(mono) >= 3
    for path in mono:
        names = tok.to_strings(path)
        ids = tok.encode(path)
        assert UNK_ID not in ids and ids[0] != BOS_ID and ids[-1] != EOS_ID
        dec = tok.decode(ids)
        assert len(dec.tracks) == 1 and len(dec.tracks[0].notes) == len(names)
        assert tok.to_strings(dec) == names


def test_chorale_round_trip_keeps_pitch_class_sets(tok, chorale):
    strings = tok.to_strings(chorale)
    assert sum("." in s for s in strings) > len(strings) / 3  # really chords
    after = tok.to_strings(tok.decode(tok.encode(chorale)))

    def pcs(s: str) -> set[int]:
        return {name_pitch(s) % 12} if s[0].isalpha() else {int(pc) for pc in s.split(".")}

    assert [pcs(s) for s in after] == [pcs(s) for s in strings]
    assert after == strings  # even the strings: normal order and octave-only chords survive


def test_chord_decodes_upwards_from_octave_4(tmp_path):
    path = tmp_path / "chords.mid"
    notes = [(0, 43), (0, 59), (0, 86), (240, 72), (240, 64), (240, 55), (480, 50), (480, 74)]
    _score(notes).dump_midi(str(path))
    tok = PitchTokenizer()
    tok.train([path])
    assert tok.to_strings(path) == ["7.11.2", "0.4.7", "2"]
    dec = tok.decode(tok.encode(path))
    got = [(n.time, n.pitch) for n in dec.tracks[0].notes]
    assert got == [(0, 67), (0, 71), (0, 74), (240, 60), (240, 64), (240, 67), (480, 62), (480, 74)]


def test_unknown_strings_map_to_unk(tok):
    ids = tok.encode(_score([(0, 127), (240, 60), (480, 1), (480, 2), (480, 3)]))  # G9, C4, chord 1.2.3
    assert tok.itos[ids[1]] == "C4"
    assert ids[0] == UNK_ID and ids[2] == UNK_ID
    assert tok.syntax_errors(ids) == 2


def test_min_count_and_sorted_vocabulary(folk):
    all_ = PitchTokenizer()
    all_.train(folk)
    common = PitchTokenizer(min_count=20)
    common.train(folk)
    assert all_.itos[:4] == ["PAD", "BOS", "EOS", "UNK"]
    assert 4 < common.vocab_size < all_.vocab_size
    notes = [name_pitch(s) for s in all_.itos[4:] if "." not in s]
    chords = [tuple(map(int, s.split("."))) for s in all_.itos[4:] if "." in s]
    assert all_.itos[4 : 4 + len(notes)] == [pitch_name(p) for p in sorted(notes)]  # notes first, by pitch
    assert chords == sorted(chords)
    again = PitchTokenizer()
    again.train(list(reversed(folk)))
    assert again.itos == all_.itos


def test_encode_before_train_raises(chorale):
    with pytest.raises(RuntimeError, match="train"):
        PitchTokenizer().encode(chorale)


def test_save_load_gives_identical_ids(tok, folk, chorale, tmp_path):
    path = tmp_path / "pitch.json"
    tok.save(path)
    back = load_tokenizer(path)
    assert type(back) is PitchTokenizer and back.kind == "pitch"
    assert back.config_dict() == tok.config_dict() and back.vocab_size == tok.vocab_size
    for p in (folk[0], chorale):
        assert back.encode(p) == tok.encode(p)


def test_syntax_errors(tok, chorale):
    ids = tok.encode(chorale)
    assert tok.syntax_errors(ids) == 0 and tok.syntax_errors([BOS_ID, *ids, EOS_ID]) == 0
    assert tok.syntax_errors([*ids[:4], PAD_ID, BOS_ID, *ids[4:], tok.vocab_size + 3]) == 3


def test_decode_ignores_specials(tok):
    c4 = tok.stoi["C4"]
    dec = tok.decode([BOS_ID, c4, PAD_ID, UNK_ID, c4, EOS_ID, tok.vocab_size])
    assert [(n.time, n.pitch) for n in dec.tracks[0].notes] == [(0, 60), (tok.step_ticks, 60)]


def test_drum_tracks_are_dropped(tok, chorale):
    score = read_score(chorale)
    drums = symusic.Track(name="drums", program=0, is_drum=True)
    drums.notes.append(symusic.Note(0, 60, 36, 100))
    score.tracks.append(drums)
    assert tok.encode(score) == tok.encode(chorale)


def test_train_on_scores_and_their_transposed_copies(folk):
    """What the token cache does (``learns_from_copies``): one pass over originals and shifted copies."""
    assert PitchTokenizer.learns_from_copies is True
    scores = [read_score(p) for p in folk[:3]]

    def with_copies():
        for score in scores:
            yield score
            yield score.shift_pitch(5)

    tok = PitchTokenizer()
    tok.train(with_copies())  # a generator: read once, never measured with len()
    seen = {s for score in with_copies() for s in tok.to_strings(score)}
    assert set(tok.itos[4:]) == seen
    assert UNK_ID not in tok.encode(scores[0].shift_pitch(5))
    plain = PitchTokenizer()
    plain.train(folk[:3])
    assert set(plain.itos) < set(tok.itos)  # the copies add strings the originals lack

    empty = symusic.Score(480)
    empty.tracks.append(symusic.Track(name="t", program=0, is_drum=False))
    with pytest.raises(ValueError, match=r"no usable notes in 2 files \(2 rejected"):
        PitchTokenizer().train(iter([empty, empty]))
