"""Hand-computed values for the torchmetrics-based metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from musicgen.metrics import (
    CompressionRatio,
    NgramRepetition,
    NLLPerNote,
    Perplexity,
    PitchHistogram,
    SyntaxErrorRate,
    ngram_stats,
    pitch_counts,
)

ALT = [1, 2, 1, 2, 1, 2]


# ----------------------------------------------------------------------------- perplexity


def test_perplexity_matches_cross_entropy_and_ignores_index():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    targets = torch.randint(0, 7, (2, 5), generator=g)
    targets[0, :2] = -100
    targets[1, 4] = -100
    metric = Perplexity()
    metric.update(logits, targets)
    expected = torch.exp(F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), ignore_index=-100))
    assert torch.allclose(metric.compute(), expected)
    assert int(metric.count) == 7


def test_perplexity_accumulates_micro_average_over_batches_and_shapes():
    g = torch.Generator().manual_seed(1)
    a_logits, a_t = torch.randn(3, 4, 6, generator=g), torch.randint(0, 6, (3, 4), generator=g)
    b_logits, b_t = torch.randn(5, 6, generator=g), torch.randint(0, 6, (5,), generator=g)
    metric = Perplexity()
    metric.update(a_logits, a_t)
    metric.update(b_logits.to(torch.bfloat16), b_t)  # (B, V) form, low-precision logits
    all_logits = torch.cat([a_logits.reshape(-1, 6), b_logits.to(torch.bfloat16).float()])
    expected = torch.exp(F.cross_entropy(all_logits, torch.cat([a_t.reshape(-1), b_t])))
    assert torch.allclose(metric.compute(), expected, rtol=1e-5)


def test_perplexity_update_nll_and_override():
    metric = Perplexity(ignore_index=0)
    metric.update_nll(torch.tensor(6.0), 3)
    assert math.isclose(float(metric.compute()), math.exp(2.0), rel_tol=1e-6)
    metric.update_nll(2.0, torch.tensor(1))  # must invalidate the cached compute() value
    assert math.isclose(float(metric.compute()), math.exp(2.0), rel_tol=1e-6)
    metric.update_nll(4.0, 1)
    assert math.isclose(float(metric.compute()), math.exp(12.0 / 5.0), rel_tol=1e-6)
    with pytest.raises(ValueError):
        metric.update(torch.randn(2, 4), sum_nll=1.0, count=1)
    with pytest.raises(ValueError):
        metric.update(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    # per-call ignore_index override
    metric.reset()
    metric.update(torch.zeros(1, 3, 4), torch.tensor([[1, 5, 2]]), ignore_index=5)
    assert int(metric.count) == 2
    assert math.isclose(float(metric.compute()), 4.0, rel_tol=1e-6)  # uniform over 4 tokens


def test_perplexity_flags():
    assert Perplexity.higher_is_better is False
    assert Perplexity.full_state_update is False


# ----------------------------------------------------------------------------- nll / syntax


def test_nll_per_note():
    metric = NLLPerNote()
    metric.update(torch.tensor([3.0, 5.0]), 4)
    metric.update(2.0, torch.tensor(1))
    assert math.isclose(float(metric.compute()), 10.0 / 5.0, rel_tol=1e-6)
    assert NLLPerNote.higher_is_better is False
    assert "tokenis" in NLLPerNote.__doc__  # the docstring says why per note, not per token


def test_syntax_error_rate():
    metric = SyntaxErrorRate()
    metric.update(1, 10)
    metric.update(torch.tensor(3), torch.tensor(10))
    assert math.isclose(float(metric.compute()), 0.2, rel_tol=1e-6)
    with pytest.raises(ValueError):
        metric.update(11, 10)


# ----------------------------------------------------------------------------- repetition


def test_ngram_stats_hand_values():
    assert ngram_stats(ALT, 2) == (2, 5)  # (1,2) (2,1) (1,2) (2,1) (1,2)
    assert ngram_stats(ALT, 4) == (2, 3)  # (1,2,1,2) (2,1,2,1) (1,2,1,2)
    assert ngram_stats([5, 6, 7], 2) == (2, 2)
    assert ngram_stats([5], 2) == (0, 0)
    assert ngram_stats(torch.tensor([7, 7, 7, 7]), 1) == (1, 4)


def test_ngram_repetition_is_micro_average():
    metric = NgramRepetition(2)
    metric.update([ALT])
    assert math.isclose(float(metric.compute()), 3 / 5, rel_tol=1e-6)
    metric.update([torch.tensor([5, 6, 7]), [9]])  # 0 of 2 repeated; [9] has no bigram
    assert math.isclose(float(metric.compute()), 3 / 7, rel_tol=1e-6)
    rep4 = NgramRepetition(4)
    rep4.update(torch.tensor([ALT, [3, 4, 5, 6, 7, 8]]))  # 2-D tensor: one row per sequence
    assert math.isclose(float(rep4.compute()), 1 / 6, rel_tol=1e-6)  # 1 of 3 + 0 of 3
    with pytest.raises(ValueError):
        NgramRepetition(0)


def test_ngram_repetition_empty_is_nan():
    metric = NgramRepetition(16)
    metric.update([ALT])
    assert math.isnan(float(metric.compute()))


def test_compression_ratio_macro_and_micro():
    seqs = [ALT, [5, 6, 7], [9]]
    macro = CompressionRatio(2)
    macro.update(seqs)
    assert math.isclose(float(macro.compute()), (2 / 5 + 2 / 2) / 2, rel_tol=1e-6)  # [9] skipped
    micro = CompressionRatio(2, average="micro")
    micro.update(seqs)
    assert math.isclose(float(micro.compute()), 4 / 7, rel_tol=1e-6)
    rep = NgramRepetition(2)
    rep.update(seqs)
    assert math.isclose(float(micro.compute()), 1 - float(rep.compute()), rel_tol=1e-6)
    assert CompressionRatio.higher_is_better is True
    with pytest.raises(ValueError):
        CompressionRatio(2, average="median")


# ----------------------------------------------------------------------------- pitch


def _ref_counts():
    ref = torch.zeros(128)
    ref[60] = 1
    ref[62] = 1
    return ref


def test_pitch_histogram_hand_computed():
    eps = 1e-3
    metric = PitchHistogram(_ref_counts(), eps=eps)  # pitch_range from the reference: (60, 62)
    assert metric.pitch_range == (60, 62)
    metric.update(torch.tensor([60, 60]))
    metric.update([60, 64])
    out = metric.compute()
    # p: 60 -> .75, 64 -> .25 ; q: 60 -> .5, 62 -> .5 ; bins where both are 0 add 0.
    e = eps
    kl = (
        (0.75 + e) * math.log((0.75 + e) / (0.5 + e))
        + e * math.log(e / (0.5 + e))
        + (0.25 + e) * math.log((0.25 + e) / e)
    ) / (1 + 128 * e)
    assert math.isclose(float(out["kl"]), kl, rel_tol=1e-5)
    assert math.isclose(float(out["overlap"]), 0.5, rel_tol=1e-6)
    assert math.isclose(float(out["out_of_range"]), 0.25, rel_tol=1e-6)
    assert out["histogram"].shape == (128,)
    assert math.isclose(float(out["histogram"][60]), 0.75, rel_tol=1e-6)

    wide = PitchHistogram(_ref_counts(), pitch_range=(60, 64))
    wide.update([[60, 64], torch.tensor([62])])  # list of per-piece sequences
    assert float(wide.compute()["out_of_range"]) == 0.0


def test_pitch_histogram_identical_and_validation():
    metric = PitchHistogram(_ref_counts() * 10)
    metric.update([60, 62, 62, 60])
    out = metric.compute()
    assert abs(float(out["kl"])) < 1e-6
    assert math.isclose(float(out["overlap"]), 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError):
        metric.update([128])
    with pytest.raises(ValueError):
        PitchHistogram(torch.zeros(128))
    with pytest.raises(ValueError):
        PitchHistogram(torch.ones(12))
    with pytest.raises(ValueError):
        PitchHistogram(torch.ones(128), pitch_range=(70, 60))


def test_pitch_counts():
    counts = pitch_counts([60, 60, 61])
    assert counts.dtype == torch.long and counts.shape == (128,)
    assert counts[60] == 2 and counts[61] == 1 and counts.sum() == 3
    assert pitch_counts(torch.tensor([[0, 127]])).sum() == 2
    with pytest.raises(ValueError):
        pitch_counts([-1])
