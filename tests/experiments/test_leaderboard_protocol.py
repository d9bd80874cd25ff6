"""The leaderboard's protocol, by composition (no training): ``size=full`` keeps every version at
its own size, ``size=small`` shrinks them by one rule that keeps their differences, each claim
compares the entries that differ in the one thing it is about, and the convergence rule."""

import math

import pytest

from musicgen.config import compose
from musicgen.experiments.leaderboard.protocol import compose_train, converged, entry_overrides, parameter_count
from musicgen.experiments.leaderboard.runs import run_settings


@pytest.fixture(scope="module")
def board():
    return compose("leaderboard", [])


def train_of(board, name, size=None):
    if size:
        board.size = size
    return compose_train(entry_overrides(board, name))


def own(name):
    return compose("train", [f"version={name}"])


SHAPE = {"lstm": ("hidden_sizes", "input_mode", "embedding_dim"),
         "transformer": ("n_layers", "n_heads", "d_model", "d_ff")}


def shape(train):
    keys = SHAPE["lstm" if "hidden_sizes" in train.model else "transformer"]
    return {k: train.model[k] for k in keys} | {"seq_len": train.data.seq_len, "objective": train.objective.name}


def test_size_full_composes_every_version_at_its_own_size(board):
    board.size = "full"
    for entry, version in [("lstm_pitch", "v1"), ("v5", "v5"), ("v6", "v6"), ("v7", "v7"), ("v8", "v8")]:
        t, v = train_of(board, entry), own(version)
        assert shape(t) == shape(v), entry
        assert t.data.batch_size == v.data.batch_size
        assert t.trainer.accumulate_grad_batches == v.trainer.accumulate_grad_batches
        assert t.tokenizer == v.tokenizer and t.version.name == version
        assert list(t.data.corpora) == ["folk"] and t.data.seed == 0  # one dataset and split for all


def test_size_small_shrinks_every_version_by_one_rule_and_keeps_their_differences(board):
    board.size = "small"
    rule = board.sizes.small
    small = {e: train_of(board, e) for e in ("lstm_pitch", "v5", "v6", "v7", "v8")}
    for entry, version in [("lstm_pitch", "v1"), ("v5", "v5"), ("v6", "v6")]:
        t, v = small[entry].model, own(version).model
        assert list(t.hidden_sizes) == [round(h * rule.width) for h in v.hidden_sizes]
        assert t.input_mode == v.input_mode
        assert small[entry].data.seq_len == round(own(version).data.seq_len * rule.window)
    # [256,512,256] against [512]*3: different shapes, scaled alike
    assert list(small["lstm_pitch"].model.hidden_sizes) != list(small["v5"].model.hidden_sizes)
    assert small["v5"].model.input_mode == "float" and small["v6"].model.input_mode == "embedding"
    assert small["v5"].tokenizer._target_ != small["v6"].tokenizer._target_  # pitch strings against REMI
    for entry in ("v7", "v8"):
        t, v = small[entry].model, own(entry).model
        assert t.d_model == v.d_model * rule.width and t.d_ff == v.d_ff * rule.width
        assert t.n_layers == v.n_layers * rule.depth and t.d_model // t.n_heads == v.d_model // v.n_heads
    assert small["v6"].objective.name == "seq2one" and small["v7"].objective.name == "causal"
    assert small["v8"].tokenizer.bpe_vocab_size == 1024 and small["v7"].tokenizer.bpe_vocab_size == 512


def test_the_claims_compare_the_entries_that_differ_in_what_they_claim(board):
    board.size = "small"
    run = [c for c in board.claims if not c.get("not_run")]
    for c in run:
        assert set(c.contrast) <= set(board.entries), c.name
        assert sum(c.contrast.values()) == 0, c.name  # a contrast: no entry's level leaks in
        assert 0 < c.margin and 0 < c.min_effect and c.better in ("lower", "higher")
    claims = {c.name: c for c in board.claims}
    assert dict(claims["tokenisation_over_capacity"].contrast) == {"v6": 1, "v5": -2, "lstm_pitch": 1}
    assert claims["tokenisation_over_capacity"].metric != "nll_per_note"  # pitch strings vs REMI: decoded figures

    t = {e: train_of(board, e) for e in ("v7", "v6_causal", "v8", "v8_notes", "v7_remi_tokens", "v7_remi_notes",
                                         "v7_no_augment")}
    # Transformer against LSTM: same objective, tokeniser, windows and batch; parameters matched
    v7, lstm = t["v7"], t["v6_causal"]
    assert (lstm.objective.name, lstm.tokenizer, lstm.data.seq_len, lstm.data.stride, lstm.data.batch_size) == \
        (v7.objective.name, v7.tokenizer, v7.data.seq_len, v7.data.stride, v7.data.batch_size)
    assert "hidden_sizes" in lstm.model and "d_model" in v7.model
    p_lstm, p_tf = parameter_count(lstm, 512), parameter_count(v7, 512)
    assert abs(p_lstm - p_tf) / p_tf < 0.05
    # BPE-1024 against BPE-512 and BPE against REMI: equal tokens per window, and equal notes per window
    assert t["v8"].data.seq_len == v7.data.seq_len and t["v7_remi_tokens"].data.seq_len == v7.data.seq_len
    assert t["v8_notes"].data.seq_len == round(v7.data.seq_len * 2.4 / 3.5)
    assert t["v7_remi_notes"].data.seq_len == round(v7.data.seq_len * 2.4)
    assert t["v7_remi_notes"].model.max_seq_len >= t["v7_remi_notes"].data.seq_len
    assert t["v7_remi_tokens"].tokenizer.get("bpe_vocab_size") is None
    # augmentation: the one difference is the transposed copies
    assert t["v7_no_augment"].data.augment.copies == 0 and v7.data.augment.copies > 0
    copies = f"data.augment.copies={v7.data.augment.copies}"
    assert compose_train([*entry_overrides(board, "v7_no_augment"), copies]) == v7


def test_the_claims_that_needed_a_change_outside_the_board_are_wired(board):
    """Augmentation on transposed test pieces, genre against pooled data, and the music-aware
    position: each differs from its control in its one thing, and none is marked not run."""
    board.size = "small"
    claims = {c.name: c for c in board.claims}
    assert not any(c.get("not_run") for c in board.claims)
    aug = claims["augmentation_transposed_test"]
    assert dict(aug.contrast) == dict(claims["augmentation"].contrast) and aug.metric == "nll_per_note"
    assert list(aug.transpose) == [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6]
    from musicgen.experiments.leaderboard.runs import evaluation_settings

    assert evaluation_settings(board, "v7_no_augment")["transpose"] == "[-5,-4,-3,-2,-1,1,2,3,4,5,6]"
    assert "transpose" not in evaluation_settings(board, "v6")  # only the claim's entries score copies

    v7 = train_of(board, "v7")
    genre = claims["genre_over_pooled"]
    assert dict(genre.contrast) == {"v7_oneills": 1, "v7_pooled_folk": -1} and genre.pieces == "folk/oneills1850/"
    alone, pooled = train_of(board, "v7_oneills"), train_of(board, "v7_pooled_folk")
    assert list(alone.data.include) == ["folk/oneills1850/"]
    assert list(pooled.data.include) == ["folk/oneills1850/", "folk/airdsAirs/", "folk/ryansMammoth/"]
    # one draw of the folk corpus for both, so the collection has the same split alone and pooled
    assert alone.data.max_files == pooled.data.max_files == 2000 and alone.data.seed == pooled.data.seed
    for t in (alone, pooled):  # the data is the one difference from V7
        include = f"data.include=[{','.join(t.data.include)}]"
        assert compose_train([*entry_overrides(board, "v7"), "data.max_files=2000", include]) == t

    pos = claims["music_aware_position"]
    assert dict(pos.contrast) == {"v7_bar_position": 1, "v7": -1}
    t = train_of(board, "v7_bar_position")
    assert t.model.bar_position is True and v7.model.bar_position is False
    assert compose_train([*entry_overrides(board, "v7"), "model.bar_position=true"]) == t


def test_every_run_has_the_same_notes_budget(board):
    board.size = "small"
    budgets = {next(o for o in run_settings(board, e) if "notes_budget" in o) for e in board.entries}
    assert len(budgets) == 1 and f"max_notes:{board.budget.notes}" in budgets.pop()


def curve(values, step=100):
    return [{"notes": step * (i + 1), "nll_per_note": v} for i, v in enumerate(values)]


def test_the_convergence_rule():
    flat = converged(curve([3.0, 2.5, 2.2, 2.1, 2.05, 2.04, 2.03, 2.03, 2.03, 2.03]), 1000)
    assert flat["converged"] and flat["improvement"] < 0.01 and not flat["stopped_early"]
    falling = converged(curve([3.0, 2.8, 2.6, 2.4, 2.3, 2.2, 2.1, 2.0, 1.9, 1.8]), 1000)
    # from the validation at 800 notes (four fifths) to the end
    assert not falling["converged"] and falling["improvement"] == pytest.approx((2.0 - 1.8) / 2.0)
    early = converged(curve([3.0, 2.5, 2.4, 2.3, 2.2]), 1000)  # stopped at half its budget: early stopping
    assert early["converged"] and early["stopped_early"]
    assert not converged([], 1000)["converged"] and math.isnan(converged([], 1000)["improvement"])
