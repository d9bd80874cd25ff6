"""Leakage of the evaluated split: real folk tunes, variants of training tunes planted in test."""

import numpy as np
import pytest
import symusic

from musicgen.data.cache import SplitTokens
from musicgen.evaluation.leakage import leakage
from musicgen.metrics.likelihood import likelihood_metrics
from musicgen.metrics.similarity import MIN_UNION, score_contour, signature
from musicgen.tokenizers import RemiTokenizer


def _split(tok, named_scores) -> SplitTokens:
    docs = [[1, *tok.encode(score), 2] for _, score in named_scores]
    offsets = np.cumsum([0] + [len(d) for d in docs])
    return SplitTokens(np.concatenate(docs).astype(np.uint16), offsets, [n for n, _ in named_scores],
                       np.array([len(s.tracks[0].notes) for _, s in named_scores]))


def _variant(score: symusic.Score) -> symusic.Score:
    """The tune a fourth higher with its last note changed (another cadence)."""
    out = score.shift_pitch(5)
    out.tracks[0].notes[-1].pitch += 2
    return out


@pytest.fixture(scope="module")
def tunes(folk_midi_files) -> list[symusic.Score]:
    scores = [symusic.Score(str(p)) for p in folk_midi_files]
    return [s for s in scores if len(signature(score_contour(s))) >= MIN_UNION]


def test_planted_variants_are_found_and_left_out_of_the_clean_figures(tunes):
    assert len(tunes) >= 8
    tok = RemiTokenizer()
    train_tunes, fresh = tunes[:-3], tunes[-3:]
    train = _split(tok, [(f"folk/{i}.mid", s) for i, s in enumerate(train_tunes)]
                   + [("folk/0.mid@+3", train_tunes[0].shift_pitch(3))])  # a transposed copy: not a reference
    test = _split(tok, [("folk/v0.mid", _variant(train_tunes[0])), ("folk/v1.mid", _variant(train_tunes[1]))]
                  + [(f"folk/new{i}.mid", s) for i, s in enumerate(fresh)])
    originals = np.arange(test.n_docs)
    tokens = np.array([len(test.doc(i)) - 1 for i in originals])
    notes = test.notes
    nll = tokens * np.array([0.5, 0.5, 2.0, 2.0, 2.0])  # the leaked pieces are the easy ones
    out = leakage(tok, train, test, originals, nll, tokens, notes, n_boot=200, seed=0)

    assert (out["pieces"], out["leaked"], out["clean_pieces"]) == (5, 2, 3)
    assert out["nearest_train"][:2] == ["folk/0.mid", "folk/1.mid"]
    assert all(s >= out["threshold"] for s in out["max_similarity"][:2])
    assert all(s < out["threshold"] for s in out["max_similarity"][2:])
    assert out["leaked_share"]["value"] == 0.4 and out["leaked_share"]["low"] < 0.4 < out["leaked_share"]["high"]
    clean = likelihood_metrics(nll[2:], tokens[2:], notes[2:], 200, 0)
    assert out["likelihood"]["clean"] == clean
    assert out["likelihood"]["clean"]["nll_per_note"]["value"] > out["likelihood"]["all"]["nll_per_note"]["value"]
    copied_all = out["copying"]["all"]["copied_8gram_share_interval"]["value"]
    copied_clean = out["copying"]["clean"]["copied_8gram_share_interval"]["value"]
    assert copied_all > 0.3 > copied_clean  # the variants copy most of their figures


def test_no_clean_piece_and_mismatched_arrays(tunes):
    tok = RemiTokenizer()
    train = _split(tok, [("folk/a.mid", tunes[0])])
    test = _split(tok, [("folk/b.mid", tunes[0].shift_pitch(2))])
    out = leakage(tok, train, test, [0], np.array([3.0]), np.array([10]), test.notes, n_boot=0)
    assert out["leaked"] == 1 and out["likelihood"]["clean"] is None
    with pytest.raises(ValueError, match="2 pieces but 1 NLLs"):
        leakage(tok, train, test, [0, 0], np.array([3.0]), np.array([10]), test.notes)
