"""The Pearce (2005) benchmark: fold construction, the bits-per-note arithmetic against a hand
computed case, the n-gram's and the networks' cross-validation (and its resume), melody
extraction, and a pre-training corpus free of benchmark melodies and their duplicates."""

import math

import numpy as np
import pytest

from musicgen.experiments import pearce2005 as bm
from musicgen.experiments.pearce2005 import bits_per_note, folds, melody_events, ngram_cross_validation


def test_folds_put_every_melody_in_exactly_one():
    parts = folds(213, k=10, seed=0)
    assert len(parts) == 10 and sorted(np.concatenate(parts).tolist()) == list(range(213))
    assert {len(f) for f in parts} == {21, 22}
    assert [f.tolist() for f in folds(213, seed=0)] == [f.tolist() for f in parts]  # reproducible
    assert [f.tolist() for f in folds(213, seed=1)] != [f.tolist() for f in parts]


def test_bits_per_note_by_hand():
    # melody A: p = 1/2 then 1/4 -> (1 + 2) / 2 = 1.5 bits a note; melody B: p = 1/8 -> 3 bits
    lp = [np.log([0.5, 0.25]), np.log([0.125])]
    out = bits_per_note(lp)
    assert out["per_melody"] == pytest.approx((1.5 + 3.0) / 2)
    assert out["per_note"] == pytest.approx((1 + 2 + 3) / 3)


def test_ngram_cross_validation_scores_each_melody_once_on_unseen_folds():
    rng = np.random.default_rng(0)
    scale = [60, 62, 64, 65, 67]
    patterned = [scale * 4 for _ in range(30)]  # every melody the same: predictable from the others
    random = [rng.choice(scale, size=20).tolist() for _ in range(30)]
    a = ngram_cross_validation(patterned, order=3, n_boot=50)
    b = ngram_cross_validation(random, order=3, n_boot=50)
    assert a["melodies"] == 30 and a["per_melody"] < 0.5
    assert b["per_melody"] == pytest.approx(math.log2(5), abs=0.35)  # about uniform over 5 pitches
    assert b["per_melody_interval"][0] <= b["per_melody"] <= b["per_melody_interval"][1]


def test_melody_events_merge_ties_and_skip_rests():
    from music21 import converter

    score = converter.parse("tinyNotation: 4/4 c4 d4~ d4 r4 e2 f2", format="tinyNotation")
    assert melody_events(score) == [60, 62, 64, 65]  # the tied d is one event, the rest none


def _write_midi(path, tracks):
    """tracks: [(name, [(onset_quarters, pitch), ...])] -> a MIDI file of quarter notes."""
    import symusic

    score = symusic.Score(480)
    for name, notes in tracks:
        track = symusic.Track(name=name)
        for onset, pitch in notes:
            track.notes.append(symusic.Note(int(onset * 480), 480, pitch, 80))
        score.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))


def test_midi_melody_takes_the_soprano_and_the_top_note_of_each_onset(tmp_path):
    path = tmp_path / "x.mid"
    _write_midi(path, [("Alto", [(0, 55), (1, 57)]), ("Soprano", [(0, 67), (0, 60), (1, 69), (2, 71)])])
    assert bm.midi_melody(path) == [67, 69, 71]
    _write_midi(path, [("", [(0, 60), (1, 62)])])
    assert bm.midi_melody(path) == [60, 62]


def test_duplicates_are_found_up_to_transposition_repeats_and_variants():
    rng = np.random.default_rng(0)
    tune = (60 + np.cumsum(rng.choice([-2, -1, 1, 2, 3], size=40))).tolist()
    variant = list(tune)
    variant[20] += 1  # one note changed
    split = tune[:10] + [tune[10]] + tune[10:]  # a note written twice (a tie as two notes)
    fragment = tune[:24]
    other = (60 + np.cumsum(rng.choice([-2, -1, 1, 2, 3], size=40))).tolist()
    candidates = [[p + 5 for p in tune], variant, split, fragment, other]
    assert bm.duplicates_of(candidates, [tune]) == [True, True, True, True, False]


def test_pretraining_corpus_leaves_out_every_benchmark_melody_and_duplicate(tmp_path):
    data = tmp_path / "data"
    rng = np.random.default_rng(1)

    def melody():
        return [(i, int(p)) for i, p in enumerate(60 + np.cumsum(rng.choice([-2, -1, 1, 2], size=30)))]

    kinder, chorale, fink, kept_folk, kept_chorale = (melody() for _ in range(5))
    (data / "folk").mkdir(parents=True)
    (data / "folk" / "manifest.json").write_text("{}")
    _write_midi(data / "folk/essenFolksong/kinder0/0000.mid", [("", kinder)])  # left out by name
    _write_midi(data / "folk/essenFolksong/fink0/0000.mid", [("", fink)])
    _write_midi(data / "folk/oneills1850/0001/0000.mid", [("", kept_folk)])
    _write_midi(data / "folk/oneills1850/0001/0001.mid", [("", [(t, p - 3) for t, p in kinder])])  # duplicate
    _write_midi(data / "chorales/bwv300.mid", [("Soprano", chorale)])  # in BWV 253-438: left out
    _write_midi(data / "chorales/bwv1.6.mid", [("Soprano", [(t, p + 2) for t, p in chorale])])  # duplicate
    _write_midi(data / "chorales/bwv10.7.mid", [("Soprano", kept_chorale), ("Bass", melody())])
    protected = [[p for _, p in m] for m in (kinder, chorale, fink)]
    corpus, stats = bm.pretraining_melodies(data, protected)
    assert corpus == [[p for _, p in kept_folk], [p for _, p in kept_chorale]]
    assert stats == {"files": 7, "left_out_by_name": 3, "duplicates_removed": 2, "melodies": 2, "notes": 60}
    assert not any(bm.duplicates_of(corpus, protected))


def test_network_log_probs_are_normalised_over_the_alphabet():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = bm.build_model({"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 16, "d_ff": 32,
                            "dropout": 0.0})
    alphabet = [60, 62, 64, 65, 67]
    first = [bm.melody_log_probs(model, [[p]], alphabet)[0][0] for p in alphabet]
    assert np.exp(first).sum() == pytest.approx(1.0, abs=1e-5)  # the first note: a distribution over 5


def test_network_cross_validation_learns_and_resumes(tmp_path, monkeypatch):
    scale = [60, 62, 64, 65, 67]
    melodies = [scale * 3 for _ in range(12)]
    spec = {"kind": "lstm", "hidden_sizes": [32], "embedding_dim": 16, "dropout": 0.0}
    train = {"steps": 60, "batch_size": 4, "lr": 1e-2, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    store = bm.Store(tmp_path)
    r = bm.neural_cross_validation(melodies, spec, train, store, "t", seed=0, k=3, n_boot=50)
    assert r["melodies"] == 12 and r["per_melody"] < 0.5 * math.log2(5)  # far better than uniform
    assert len(list(tmp_path.rglob("fold*.npz"))) == 3

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(bm, "fit", no_training)
    again = bm.neural_cross_validation(melodies, spec, train, store, "t", seed=0, k=3, n_boot=50)
    assert again["per_melody"] == r["per_melody"]
    with pytest.raises(AssertionError, match="trained again"):  # a changed setting is not reused
        bm.neural_cross_validation(melodies, spec, {**train, "steps": 61}, store, "t", seed=0, k=3)


def test_the_report_is_written_and_published_when_asked(tmp_path, capsys):
    """No quick run of the whole benchmark exists (the melody extraction alone takes minutes): the
    report of a real n-gram cross-validation on small melodies goes through ``write_report``, the
    command's last step, with ``publish=true``."""
    from musicgen.config import compose

    rng = np.random.default_rng(0)
    data = {name: [list(rng.choice([60, 62, 64, 65, 67], size=12)) for _ in range(9)]
            for name in ("chorales", "kinder", "fink")}
    result = {"datasets": bm.dataset_table(data), "order": 3, "order_scores_on_fink": {},
              "ngram": {name: ngram_cross_validation(data[name], order=3, k=3, n_boot=20)
                        for name in ("chorales", "kinder")}}
    (tmp_path / "docs").mkdir()
    cfg = compose("benchmark", [f"output_dir={tmp_path / 'out'}", "publish=true", f"publish_dir={tmp_path / 'docs'}"])
    bm.write_report(cfg, result)
    own = (tmp_path / "out" / "pearce2005.md").read_text()
    assert own == bm.report_markdown(result) and own in capsys.readouterr().out
    page = (tmp_path / "docs" / "results" / "pearce2005.md").read_text()
    assert page.startswith("# Pearce (2005)") and "Written by" in page and own.split("\n", 1)[1] in page
    assert "- [Pearce (2005): pitch prediction in monophonic melodies](pearce2005.md)" in \
        (tmp_path / "docs" / "results" / "index.md").read_text()
