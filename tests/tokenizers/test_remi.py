"""REMI (V6) and REMI+BPE (V7/V8) on real music: O'Neill's folk tunes and Bach chorales."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import symusic
from miditok import TokSequence

from musicgen.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from musicgen.midi_io import read_score
from musicgen.tokenizers import BadMidiError, MusicTokenizer, RemiTokenizer, load_tokenizer


# ----------------------------------------------------------------------------- real MIDI
def _export_folk(out: Path, n: int = 12) -> list[Path]:
    """O'Neill's 1850 tunes from music21's corpus; a few hit a music21 MIDI-writer bug and are skipped."""
    from music21 import corpus, exceptions21

    opus = corpus.parse("oneills1850/0001-0050.abc")
    paths = []
    for i, score in enumerate(opus.scores[1:], start=1):
        path = out / f"oneills_{i:03d}.mid"
        try:
            score.write("midi", fp=str(path))
        except exceptions21.StreamException:
            continue
        paths.append(path)
        if len(paths) == n:
            break
    return paths


def _export_chorales(out: Path) -> list[Path]:
    from music21 import corpus

    paths = []
    for name in ("bach/bwv66.6", "bach/bwv269"):
        path = out / f"{name.split('/')[1]}.mid"
        corpus.parse(name).write("midi", fp=str(path))
        paths.append(path)
    return paths


def _shared_or_export(request, fixture: str, export, tmp_path_factory) -> list[Path]:
    """The session fixture from tests/conftest.py when there is one, else an export made here."""
    try:
        return list(request.getfixturevalue(fixture))
    except pytest.FixtureLookupError:
        return export(tmp_path_factory.mktemp(fixture))


@pytest.fixture(scope="module")
def folk(request, tmp_path_factory) -> list[Path]:
    files = _shared_or_export(request, "folk_midi_files", _export_folk, tmp_path_factory)
    assert len(files) >= 10
    return files[:12]


@pytest.fixture(scope="module")
def chorales(request, tmp_path_factory) -> list[Path]:
    files = _shared_or_export(request, "chorale_midi_files", _export_chorales, tmp_path_factory)
    assert files
    return files[:2]


@pytest.fixture(scope="module")
def remi() -> RemiTokenizer:
    return RemiTokenizer()


@pytest.fixture(scope="module")
def bpe(folk) -> RemiTokenizer:
    tok = RemiTokenizer(bpe_vocab_size=512)
    tok.train(folk[:10])
    return tok


# ----------------------------------------------------------------------------- helpers
def kept_fraction(ref: symusic.Score, dec: symusic.Score) -> float:
    """Share of ``ref``'s notes that ``dec`` has with the same pitch and the same onset to a
    sixteenth: one-to-one matches whose onsets differ by at most half a sixteenth. (Binning
    both into sixteenths would count a triplet as lost when REMI's 32nd grid moves it across
    a bin edge by a 48th.)"""

    def by_pitch(score: symusic.Score) -> dict[int, list[float]]:
        out = defaultdict(list)
        for track in score.tracks:
            for n in track.notes:
                out[n.pitch].append(n.time * 4 / score.ticks_per_quarter)  # in sixteenths
        return {p: sorted(v) for p, v in out.items()}

    ref_p, dec_p = by_pitch(ref), by_pitch(dec)
    kept = 0
    for pitch, r in ref_p.items():
        d, i, j = dec_p.get(pitch, []), 0, 0
        while i < len(r) and j < len(d):
            if abs(r[i] - d[j]) <= 0.5:
                kept, i, j = kept + 1, i + 1, j + 1
            elif r[i] < d[j]:
                i += 1
            else:
                j += 1
    total = sum(len(v) for v in ref_p.values())
    return kept / total


def onset_multiset(score: symusic.Score) -> Counter:
    tpq = score.ticks_per_quarter
    return Counter((n.pitch, round(n.time * 4 / tpq)) for t in score.tracks for n in t.notes)


# ----------------------------------------------------------------------------- vocabulary
def test_remi_vocabulary_is_the_seeds_362(remi):
    assert remi.vocab_size == len(remi._tok) == 362
    assert [remi._tok[i] for i in range(4)] == ["PAD_None", "BOS_None", "EOS_None", "UNK_None"]
    assert (remi.pad_id, remi.bos_id, remi.eos_id, remi.unk_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID)
    assert remi.kind == "remi" and remi.pitch_range == (21, 109)


@pytest.mark.parametrize("size", [100, 362])
def test_bpe_size_not_above_base_is_refused(size):
    with pytest.raises(ValueError, match=f"bpe_vocab_size={size}"):
        RemiTokenizer(bpe_vocab_size=size)


def test_untrained_bpe_refuses_to_encode(chorales):
    with pytest.raises(RuntimeError, match="train"):
        RemiTokenizer(bpe_vocab_size=512).encode(chorales[0])


# ----------------------------------------------------------------------------- round trips
def test_remi_round_trip_monophonic_folk(remi, folk):
    for path in folk:
        ids = remi.encode(path)
        assert ids[0] not in (BOS_ID, EOS_ID) and ids[-1] != EOS_ID
        dec = remi.decode(ids)
        assert len(dec.tracks) == 1
        assert kept_fraction(read_score(path), dec) >= 0.995, path.name


def test_remi_round_trip_polyphonic_chorale(remi, chorales):
    for path in chorales:
        ref, dec = read_score(path), remi.decode(remi.encode(path))
        assert len({n.time for n in ref.tracks[0].notes}) < len(ref.tracks[0].notes)  # really chords
        assert kept_fraction(ref, dec) >= 0.995
        # chorales sit on the sixteenth grid: the plain multisets agree too
        ref_set, dec_set = onset_multiset(ref), onset_multiset(dec)
        assert sum((ref_set & dec_set).values()) >= 0.995 * sum(ref_set.values())


def test_bpe_round_trip_and_shorter(remi, bpe, folk, chorales):
    assert bpe.kind == "remi_bpe" and bpe.is_trained and bpe.vocab_size == 512
    base_len = bpe_len = 0
    for path in folk[:10] + chorales:
        ids = bpe.encode(path)
        assert max(ids) < bpe.vocab_size
        assert bpe.tokens(ids) == remi.tokens(remi.encode(path))  # BPE is lossless over REMI
        assert kept_fraction(read_score(path), bpe.decode(ids)) >= 0.995
        if path in folk:
            base_len, bpe_len = base_len + len(remi.encode(path)), bpe_len + len(ids)
    assert base_len / bpe_len > 1.5, (base_len, bpe_len)


def test_encode_path_and_score_agree(remi, chorales):
    assert remi.encode(chorales[0]) == remi.encode(symusic.Score(str(chorales[0])))


# ----------------------------------------------------------------------------- drums
def test_drum_tracks_are_dropped(remi, chorales, tmp_path):
    score = symusic.Score(str(chorales[0]))
    drums = symusic.Track(name="drums", program=0, is_drum=True)
    for beat in range(32):
        drums.notes.append(symusic.Note(beat * score.ticks_per_quarter, 60, 36, 100))
    score.tracks.append(drums)
    path = tmp_path / "with_drums.mid"
    score.dump_midi(str(path))
    assert remi.encode(path) == remi.encode(chorales[0]) == remi.encode(score)

    only = symusic.Score(score.ticks_per_quarter)
    only.tracks.append(drums)
    with pytest.raises(BadMidiError, match="drums only"):
        remi.encode(only)


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("which", ["remi", "bpe"])
def test_save_load_gives_identical_ids(which, remi, bpe, folk, chorales, tmp_path):
    tok = remi if which == "remi" else bpe
    path = tmp_path / "tok" / "tokenizer.json"
    tok.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp file left
    back = load_tokenizer(path)
    assert type(back) is RemiTokenizer and back.kind == tok.kind
    assert back.vocab_size == tok.vocab_size
    assert back.config_dict() == tok.config_dict()
    for p in (folk[0], chorales[0]):
        assert back.encode(p) == tok.encode(p)


def test_config_dict_is_deterministic_and_tracks_training(remi, bpe):
    assert RemiTokenizer().config_dict() == remi.config_dict()
    assert "bpe_sha256" in bpe.config_dict() and "bpe_sha256" not in remi.config_dict()
    assert bpe.config_dict() != RemiTokenizer(bpe_vocab_size=512).config_dict()


def test_bpe_training_is_deterministic(bpe, folk):
    again = RemiTokenizer(bpe_vocab_size=512)
    again.train(folk[:10])
    assert again.config_dict() == bpe.config_dict()


# ----------------------------------------------------------------------------- grammar
@pytest.mark.parametrize("which", ["remi", "bpe"])
def test_syntax_errors_clean_and_corrupted(which, remi, bpe, folk, chorales):
    tok = remi if which == "remi" else bpe
    for path in (folk[0], chorales[0]):
        ids = tok.encode(path)
        assert tok.syntax_errors(ids) == 0
        assert tok.syntax_errors([BOS_ID, *ids, EOS_ID]) == 0
        assert tok.syntax_errors(ids[::-1]) > 0
        assert tok.syntax_errors(ids[:5] + [PAD_ID, UNK_ID] + ids[5:]) >= 2


@pytest.mark.parametrize("which", ["remi", "bpe"])
def test_decode_never_crashes(which, remi, bpe):
    """Sampled sequences can be anything: random ids, specials only, ids past the vocabulary."""
    tok = remi if which == "remi" else bpe
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(tok.vocab_size + 5) for _ in range(rng.randrange(0, 300))]
        score = tok.decode(ids)
        assert len(score.tracks) == 1
        tok.syntax_errors(ids)
    assert len(tok.decode([]).tracks[0].notes) == 0
    assert len(tok.decode([BOS_ID, PAD_ID, UNK_ID, EOS_ID]).tracks[0].notes) == 0


# ----------------------------------------------------------------------------- errors per base token
def _base_ids(remi: RemiTokenizer, tokens: list[str]) -> list[int]:
    return [remi.backend.vocab[t] for t in tokens]


def _bpe_ids(bpe: RemiTokenizer, base_ids: list[int]) -> list[int]:
    """The BPE ids of a base REMI id sequence (merged per bar, as ``encode`` does)."""
    seq = TokSequence(ids=list(base_ids))
    bpe.backend.complete_sequence(seq)
    bpe.backend.encode_token_ids(seq)
    return list(seq.ids)


def _as_base(bpe: RemiTokenizer, ids: list[int]) -> list[int]:
    """What REMI would have for the same content: known BPE ids expanded to base ids; UNK and
    unknown ids (there is no base form) stay one erroneous id each."""
    out = []
    for i in ids:
        if 4 <= i < bpe.vocab_size:
            out += _base_ids(bpe, bpe.tokens([i]))
        else:
            out.append(UNK_ID if i == UNK_ID else 10_000)
    return out


def test_base_length_is_the_number_of_remi_tokens(remi, bpe, folk, chorales):
    for path in (*folk[:3], chorales[0]):
        base, merged = remi.encode(path), bpe.encode(path)
        assert len(merged) < len(base)
        assert remi.base_length(base) == bpe.base_length(merged) == len(base) == len(bpe.tokens(merged))
        assert bpe.base_length([BOS_ID, *merged, EOS_ID, PAD_ID, PAD_ID]) == len(base)  # specials not counted
        # plain REMI needs no expansion: the interface's default gives the same
        assert MusicTokenizer.base_length(remi, [BOS_ID, *base, EOS_ID]) == len(base)
    assert bpe.base_length([]) == remi.base_length([PAD_ID]) == 0
    assert bpe.base_length([UNK_ID, bpe.vocab_size + 7]) == 2  # one erroneous token each


def test_syntax_errors_hand_computed_for_remi_and_bpe(remi, bpe, folk):
    """Two errors in 10 base tokens: Position_4 after Position_8 in one bar goes back in time,
    Velocity after Duration is a wrong type. The same count and length whether the tokens come
    as REMI ids or merged into BPE ids (velocity and duration of the tunes' first note, a pair
    that BPE merges)."""
    first = remi.tokens(remi.encode(folk[0]))
    at = next(i for i, t in enumerate(first) if t.startswith("Velocity"))
    note = first[at : at + 2]
    assert note[1].startswith("Duration")
    tokens = ["Bar_None", "Position_8", "Pitch_60", *note, "Position_4", "Pitch_62", *note, note[0]]
    base = _base_ids(remi, tokens)
    merged = _bpe_ids(bpe, base)
    assert bpe.tokens(merged) == tokens and len(merged) < len(base)
    assert remi.syntax_errors(base) == bpe.syntax_errors(merged) == 2
    assert remi.base_length(base) == bpe.base_length(merged) == 10
    # MidiTok 3.1 itself divides the base-token errors by the number of ids it was given
    seq = TokSequence(ids=list(merged))
    seq.are_ids_encoded = True
    assert bpe.backend.tokens_errors(seq) == pytest.approx(2 / len(merged))


@pytest.mark.parametrize("corrupt", ["reverse", "shuffle", "specials"])
def test_corrupted_bpe_and_remi_count_the_same_errors(corrupt, remi, bpe, folk, chorales):
    rng = random.Random(0)
    for path in (folk[0], folk[5], chorales[0]):
        ids = bpe.encode(path)
        if corrupt == "reverse":
            bad = ids[::-1]
        elif corrupt == "shuffle":
            bad = ids[:]
            rng.shuffle(bad)
        else:
            bad = ids[:7] + [UNK_ID, bpe.vocab_size + 3] + ids[7:20] + [UNK_ID] + ids[20:]
        same = _as_base(bpe, bad)
        errors, length = bpe.syntax_errors(bad), bpe.base_length(bad)
        assert errors == remi.syntax_errors(same) > 0
        assert length == remi.base_length(same) == len(same) > len(bad)
        assert errors <= length - 1  # the first token is never an error
        if corrupt == "specials":
            assert errors >= 3
    # a corrupted base sequence merged by BPE afterwards: the same errors, per the same tokens
    base = remi.encode(chorales[0])
    bad = base[:30] + base[40:70] + base[30:40] + base[70:]
    merged = _bpe_ids(bpe, bad)
    assert len(merged) < len(bad)
    assert bpe.syntax_errors(merged) == remi.syntax_errors(bad) > 0
    assert bpe.base_length(merged) == remi.base_length(bad) == len(bad)


# ----------------------------------------------------------------------------- bar lines through rests
@pytest.mark.parametrize("time_signatures", [False, True])
def test_rests_within_bars_mark_every_bar_line_and_decode_the_same_notes(request, time_signatures):
    """``rests_cross_bars=False``: MidiTok's REMI writes a rest that reaches a bar line without
    that bar's Bar token; this one writes the Bar tokens instead. On every real tune and chorale of
    the fixture: the same vocabulary, the same decoded notes (onset, pitch, duration) as MidiTok's
    encoding, a Bar token for every bar line up to the last note's, and no grammar error; the
    fixture does have tunes whose rests hide bar lines from MidiTok's encoding."""
    files = list(request.getfixturevalue("folk_midi_files")) + list(request.getfixturevalue("chorale_midi_files"))
    plain = RemiTokenizer(use_time_signatures=time_signatures)
    lines = RemiTokenizer(use_time_signatures=time_signatures, rests_cross_bars=False)
    assert lines.vocab_size == plain.vocab_size and lines.backend.vocab == plain.backend.vocab
    hidden = 0
    for f in files:
        a, b = plain.encode(f), lines.encode(f)
        da, db = plain.decode(a), lines.decode(b)
        notes = [sorted((n.time, n.pitch, n.duration) for t in s.tracks for n in t.notes) for s in (da, db)]
        assert notes[0] == notes[1], f.name
        assert lines.syntax_errors(b) == 0, f.name
        toks = lines.tokens(b)
        tpq = db.ticks_per_quarter
        last = max(t for t, _, _ in notes[1])
        if time_signatures and len(db.time_signatures):
            from musicgen.tokenizers.bars import bar_lines

            expected = int((bar_lines(db, True) <= last).sum())
        else:
            expected = last // (4 * tpq) + 1
        assert toks.count("Bar_None") == expected, f.name
        hidden += plain.tokens(a).count("Bar_None") < expected
    assert hidden >= 1  # the fixture has tunes whose rests hide bar lines from MidiTok's REMI


def test_rests_cross_bars_is_saved_and_old_files_keep_midi_toks_encoding(folk, tmp_path):
    lines = RemiTokenizer(rests_cross_bars=False, bpe_vocab_size=400)
    lines.train(folk[:10])
    lines.save(tmp_path / "lines.json")
    again = load_tokenizer(tmp_path / "lines.json")
    assert isinstance(again, RemiTokenizer) and again.config_dict() == lines.config_dict()
    assert all(again.encode(f) == lines.encode(f) for f in folk)
    plain = RemiTokenizer()
    assert "rests_cross_bars" not in plain.config_dict()["options"]  # files written before the option
    plain.save(tmp_path / "plain.json")
    assert type(load_tokenizer(tmp_path / "plain.json").backend) is type(plain.backend)


def test_bpe_from_copies_encodes_transposed_copies_as_compactly_as_originals(folk, tmp_path):
    """Merges learned on the untransposed tunes favour their keys: a copy shifted by a tritone
    takes more tokens per note. Learned from the tunes and their copies (``bpe_from_copies``), the
    copies encode about as compactly as the originals; the option is saved with the tokeniser."""
    from musicgen.midi_io import read_score

    scores = [read_score(f) for f in folk]
    shifted = [s.shift_pitch(6) for s in scores]

    def tokens(tok, pieces):
        return sum(len(tok.encode(s)) for s in pieces)

    plain = RemiTokenizer(bpe_vocab_size=600)
    plain.train(folk)
    copies = RemiTokenizer(bpe_vocab_size=600, bpe_from_copies=True)
    assert copies.learns_from_copies and not plain.learns_from_copies
    copies.train([s for pair in zip(scores, shifted, strict=True) for s in pair])
    gap_plain = tokens(plain, shifted) / tokens(plain, scores)
    gap_copies = tokens(copies, shifted) / tokens(copies, scores)
    assert gap_plain > 1.05  # the originals' merges fit the copies worse
    assert abs(gap_copies - 1.0) < gap_plain - 1.0
    copies.save(tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json").learns_from_copies
    assert not RemiTokenizer(bpe_from_copies=True).learns_from_copies  # plain REMI learns nothing
