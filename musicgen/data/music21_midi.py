"""music21 scores to MIDI bytes: ABC tunes split and parsed, parts rebuilt so that every note and
rest lands in the MIDI file as written (``musicgen.data.corpus`` exports the corpora with these)."""

from __future__ import annotations


def split_abc_tunes(text: str) -> list[str]:
    """The tunes of an ABC file, each with the file header (text before the first ``X:``) prepended.

    music21 splits an ABC file into a dict keyed by reference number, which silently merges tunes
    that share a number and drops tunes that fail to parse; splitting here keeps every tune, in
    file order, so each can succeed or fail on its own.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("X:")]
    if not starts:
        return [text] if text.strip() else []
    header = lines[: starts[0]]
    bounds = zip(starts, starts[1:] + [len(lines)])
    return ["\n".join(header + lines[a:b]) + "\n" for a, b in bounds]

def parse_abc_tune(text: str):
    """A music21 Score from the ABC text of one tune (as ``split_abc_tunes`` returns it)."""
    from music21 import abcFormat
    from music21.abcFormat import translate

    handler = abcFormat.ABCHandler()
    handler.process(text)
    return translate.abcToStreamScore(handler)

def melody_midi_bytes(score) -> bytes:
    """MIDI bytes of the first part of ``score`` that has notes (the melody of a folk tune).

    "That has notes": music21 turns ``V:`` lines in an ABC header into parts of their own, so
    a two-voice tune can start with empty parts (e.g. miscFolk/americanfifeopus.abc, X:8).
    """
    parts = [p for p in (list(score.parts) or [score]) if p.recurse().notes]
    if not parts:
        raise ValueError("no notes")
    return _midi_bytes([rebuild_part(parts[0])])

def score_midi_bytes(score) -> bytes:
    """MIDI bytes of every part of ``score`` (one track each)."""
    parts = list(score.parts) or [score]
    return _midi_bytes([rebuild_part(p) for p in parts])

def _midi_bytes(parts: list) -> bytes:
    from music21 import midi, stream

    if not any(p.notes for p in parts):
        raise ValueError("no notes")
    out = stream.Score()
    for p in parts:
        out.insert(0, p)
    return midi.translate.streamToMidiFile(out).writestr()

def rebuild_part(part):
    """A fresh flat Part holding ``part``'s notes, rests and chords, its time signatures, keys and
    tempo marks (copies), and its first instrument, at their offsets.

    Why not write ``part`` itself: music21's ABC reader puts one TimeSignature object into several
    measures (when a metre is restated), so flattening the part inserts the same object twice
    and ``score.write('midi')`` raises "TimeSignature ... is already found in this Stream" on
    many tunes (16 of the first 80 of essenFolksong/altdeu10.abc, 9 of O'Neill's first 50).
    Walking measure by measure and giving each time signature occurrence its own object avoids
    that. Notes are shared, not copied (the caller drops the parsed score; music21's MIDI writer
    copies everything again anyway). Chord symbols (``"Am"`` in ABC) are accompaniment
    annotations, not notes of the tune, and are left out. So are grace notes: they take no time
    in music21, music21 writes each as a note-on and note-off at the same tick, and MIDI readers
    pair those with later note-offs into notes bars long.
    Repeats are not expanded: the file holds the notes as written.
    """
    import copy

    from music21 import harmony, key, meter, note, stream, tempo

    out = stream.Part()
    seen: set[tuple[str, float]] = set()  # (kind, offset) of metre/key/tempo already placed
    instr = part.getInstrument(returnDefault=False)
    if instr is not None:
        out.insert(0, copy.deepcopy(instr))

    def place(el, offset: float) -> None:
        if isinstance(el, harmony.Harmony):
            return
        if isinstance(el, note.GeneralNote):
            if el.duration.quarterLength > 0:  # not a grace note
                out.coreInsert(offset, el)
            return
        if isinstance(el, meter.TimeSignature):
            kind, el = "meter", meter.TimeSignature(el.ratioString)  # a deepcopy costs 10x more
        elif isinstance(el, key.KeySignature):
            kind, el = "key", copy.deepcopy(el)
        elif isinstance(el, tempo.MetronomeMark):
            kind, el = "tempo", copy.deepcopy(el)
        else:
            return
        tag = (kind, float(offset))
        if tag not in seen:
            seen.add(tag)
            out.coreInsert(offset, el)

    for el in part:
        offset = part.elementOffset(el)
        if isinstance(el, stream.Stream):  # a Measure (or a Voice directly in the part)
            flat = el.flatten()
            for inner in flat:
                place(inner, offset + flat.elementOffset(inner))
        else:
            place(el, offset)
    out.coreElementsChanged()
    return out
