"""Length-matched material (issue 27): a row of samples longer than real pieces is read up to a
real piece's note count, so its histograms pool as much music per piece as the real row; the
length figures still describe whole pieces; the EOS diagnosis at the ends of real pieces."""

import json

import numpy as np
import pytest
import symusic

from musicgen.config import compose
from musicgen.evaluation.run import evaluate
from musicgen.evaluation.scoring import eos_at_ends
from musicgen.generation import SamplingConfig
from musicgen.metrics.features import HISTOGRAMS
from musicgen.metrics.samples import first_notes, length_targets, note_count, piece_stats, training_reference
from musicgen.tokenizers import RemiTokenizer


def test_first_notes_cuts_after_the_kth_onset_and_keeps_a_chord_whole(folk_midi_files):
    score = symusic.Score(str(folk_midi_files[0]))
    n = note_count(score)
    assert n > 20
    cut = first_notes(score, 12)
    assert note_count(cut) == 12 and note_count(score) == n  # the input is not modified
    assert first_notes(score, n + 5) is score and first_notes(score, 0) is score
    chord = symusic.Score(480)
    track = symusic.Track()
    for t, p in [(0, 60), (480, 64), (480, 67), (960, 72)]:
        track.notes.append(symusic.Note(t, 240, p, 80))
    chord.tracks.append(track)
    assert note_count(first_notes(chord, 2)) == 3  # the 2nd onset is a chord: all of it stays


def test_length_targets_are_drawn_from_the_real_counts():
    t = length_targets([10, 20, 30], 500, seed=1)
    assert set(t.tolist()) == {10, 20, 30} and len(t) == 500
    assert np.array_equal(t, length_targets([10, 20, 30], 500, seed=1))


def test_long_samples_are_read_to_the_real_length(folk_midi_files, tmp_path):
    """Pieces played twice over: read whole they pool about twice the music of the originals; cut
    to the originals' lengths, their histograms count exactly as many notes as the originals'."""
    tok = RemiTokenizer()
    files = folk_midi_files[:6]
    pieces = [tok.encode(symusic.Score(str(f))) for f in files]
    doubled = [p + p for p in pieces]

    class Split:  # the reference needs a training split: the same pieces, untransposed
        n_docs = len(pieces)
        def originals(self):
            return np.arange(len(pieces))
        def doc(self, i):
            return [1, *pieces[i], 2]
    ref = training_reference(tok, Split())
    real = piece_stats(tok, pieces, ref)
    whole = piece_stats(tok, doubled, ref)
    cut = piece_stats(tok, doubled, ref, cut_notes=real["notes"][:, 0])
    assert np.all(whole["notes"] >= 2 * real["notes"] - 1)  # the length figure describes whole pieces
    assert np.array_equal(cut["notes"], whole["notes"])
    assert np.array_equal(cut["matched"][:, 0], real["notes"][:, 0])  # read as far as the real piece
    assert np.array_equal(cut["duration"].sum(axis=1), real["duration"].sum(axis=1))
    assert np.array_equal(cut["pitch"], real["pitch"])  # a piece's first half is the piece
    assert (whole["duration"].sum() > 1.9 * real["duration"].sum())


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_eos_at_real_ends_under_the_filters(smoke_run):
    from musicgen.api import MusicModel
    from musicgen.checkpoint import load_run_cache
    m = MusicModel.load(smoke_run)
    split = load_run_cache(m.run).splits["train"]
    docs = [split.doc(i) for i in split.originals()[:8]]
    plain = eos_at_ends(m, docs, SamplingConfig(temperature=1.0, top_k=0, top_p=1.0), m.trained_context)
    assert plain["pieces"] == len(docs) > 2 and 0.0 < plain["p_eos"] < 1.0
    assert plain["p_eos_filtered"] == pytest.approx(plain["p_eos"], rel=1e-5) and plain["kept_by_filters"] == 1.0
    top1 = eos_at_ends(m, docs, SamplingConfig(temperature=1.0, top_k=1, top_p=1.0), m.trained_context)
    assert top1["kept_by_filters"] == top1["eos_is_top"] == plain["eos_is_top"]  # top-1 keeps EOS only where it leads
    cold = eos_at_ends(m, docs, SamplingConfig(temperature=0.5, top_k=0, top_p=1.0), m.trained_context)
    assert cold["p_eos_filtered"] != pytest.approx(plain["p_eos"])  # temperature reshapes it


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_report_has_lengths_and_leakage(smoke_run, tmp_path):
    cfg = compose("evaluate", [f"ckpt_path={smoke_run}", f"output_dir={tmp_path}", "num_samples=3",
                               "max_new_tokens=48", "bootstrap=20", "split=train"])
    evaluate(cfg)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    lengths = saved["lengths"]
    assert set(lengths["notes_per_piece"]) == {"model", "ngram", "real"}
    assert saved["leakage"]["pieces"] > 0 and 0.0 <= saved["leakage"]["leaked_share"]["value"] <= 1.0
    for row in ("model", "ngram"):
        assert 0.0 < saved[row]["notes_read_share"]["value"] <= 1.0
    assert saved["real"]["notes_read_share"]["value"] == 1.0  # real pieces are read whole
    md = (tmp_path / "evaluation.md").read_text()
    assert "## Length" in md and "## Leakage" in md and "notes_read_share" in md
    assert set(HISTOGRAMS) <= set(saved["histograms"]["model"])
