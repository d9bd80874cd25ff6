"""Window counts and contents against a naive materialised implementation."""

import numpy as np
import pytest

from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID
from musicgen.data.windows import TARGET_STATS_CHUNK, ScoringWindows, TokenWindows, n_packed_windows, windows_per_doc
from musicgen.metrics.likelihood import scoring_plan


def make_stream(doc_lengths, seed=0):
    rng = np.random.default_rng(seed)
    docs = [np.concatenate([[BOS_ID], rng.integers(4, 50, n), [EOS_ID]]) for n in doc_lengths]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    return np.concatenate(docs).astype(np.uint16), offsets


def naive_windows(tokens, offsets, seq_len, stride, mode, pack):
    out = []
    if pack:
        for s in range(0, len(tokens) - seq_len, stride):
            x = tokens[s : s + seq_len]
            y = tokens[s + seq_len] if mode == "seq2one" else tokens[s + 1 : s + seq_len + 1]
            out.append((list(x), y if mode == "seq2one" else list(y)))
        return out
    for a, b in zip(offsets[:-1], offsets[1:]):
        doc = list(tokens[a:b])
        if mode == "seq2one":
            for t in range(1, len(doc), stride):
                ctx = doc[max(0, t - seq_len) : t]
                out.append(([PAD_ID] * (seq_len - len(ctx)) + ctx, doc[t]))
        else:
            s = 0
            while True:
                x = doc[s : s + seq_len]
                y = doc[s + 1 : s + seq_len + 1]
                out.append((x + [PAD_ID] * (seq_len - len(x)), y + [IGNORE_INDEX] * (seq_len - len(y))))
                if s + seq_len >= len(doc) - 1:
                    break
                s += stride
    return out


@pytest.mark.parametrize("mode,seq_len,stride",
                         [("seq2one", 8, 1), ("seq2one", 5, 3), ("causal", 8, 4), ("causal", 6, 6)])
@pytest.mark.parametrize("pack", [True, False])
def test_windows_match_naive(mode, seq_len, stride, pack):
    tokens, offsets = make_stream([3, 20, 7, 1, 13])
    ds = TokenWindows(tokens, offsets, seq_len, stride, mode, pack)
    expected = naive_windows(tokens, offsets, seq_len, stride, mode, pack)
    assert len(ds) == len(expected)
    x, y = ds.__getitems__(list(range(len(ds))))
    assert x.shape == (len(ds), seq_len)
    for i, (ex, ey) in enumerate(expected):
        assert x[i].tolist() == [int(v) for v in ex]
        if mode == "seq2one":
            assert int(y[i]) == int(ey)
        else:
            assert y[i].tolist() == [int(v) for v in ey]
    xi, yi = ds[len(ds) - 1]
    assert xi.tolist() == x[-1].tolist()


def test_window_count_formulas():
    # packed: N tokens, windows need seq_len + 1 tokens
    assert n_packed_windows(101, 100, 1) == 1
    assert n_packed_windows(1000, 100, 1) == 900
    assert n_packed_windows(1000, 256, 64) == (1000 - 257) // 64 + 1
    assert n_packed_windows(256, 256, 64) == 0
    # padded: a document of L tokens (BOS/EOS included) has L-1 targets
    assert windows_per_doc(10, 100, 1, "seq2one") == 9
    assert windows_per_doc(10, 100, 4, "seq2one") == 3
    assert windows_per_doc(10, 256, 64, "causal") == 1
    assert windows_per_doc(300, 256, 64, "causal") == 2  # 299 targets: windows at 0 and 64
    assert windows_per_doc(1, 256, 64, "causal") == 0


def test_target_stats_padding_and_separators():
    tokens, offsets = make_stream([10, 10])  # 2 docs of 12 tokens
    packed = TokenWindows(tokens, offsets, 4, 1, "seq2one", pack=True).target_stats()
    targets = tokens[4:]
    assert packed["pad_share"] == 0
    assert packed["separator_share"] == pytest.approx(np.isin(targets, [BOS_ID, EOS_ID]).mean())
    padded = TokenWindows(tokens, offsets, 16, 16, "causal", pack=False).target_stats()
    # one window per doc: 11 real targets (10 notes + EOS) of 16 slots
    assert padded["pad_share"] == pytest.approx(5 / 16)
    assert padded["separator_share"] == pytest.approx(1 / 16)


@pytest.mark.parametrize("mode,seq_len,stride",
                         [("causal", 8, 3), ("causal", 5, 5), ("causal", 2, 6), ("seq2one", 6, 1), ("seq2one", 4, 3)])
@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("chunk", [7, TARGET_STATS_CHUNK])
def test_target_stats_match_the_materialised_targets(mode, seq_len, stride, pack, chunk):
    # documents shorter and longer than a window; chunk=7 puts chunk boundaries inside most windows;
    # padded causal with stride 6 > seq_len 2 gives the 4-note document a window past its end
    tokens, offsets = make_stream([1, 30, 4, 17, 0, 9, 25, 2, 12], seed=3)
    ds = TokenWindows(tokens, offsets, seq_len, stride, mode, pack)
    y = ds.__getitems__(list(range(len(ds))))[1].numpy()
    pad, sep = int((y == IGNORE_INDEX).sum()), int(np.isin(y, [BOS_ID, EOS_ID]).sum())
    assert sep > 0 and (pad > 0) == (mode == "causal" and not pack)
    stats = ds.target_stats(chunk=chunk)
    assert stats == {"windows": len(ds), "targets": y.size, "pad_share": pad / y.size, "separator_share": sep / y.size}


def test_windows_are_views_not_copies(tmp_path):
    tokens, offsets = make_stream([50] * 40)
    mm = np.lib.format.open_memmap(tmp_path / "tokens.npy", mode="w+", dtype=np.uint16, shape=tokens.shape)
    mm[:] = tokens
    ds = TokenWindows(mm, offsets, 100, 1, "seq2one")
    assert ds.tokens is mm  # indexes the memmap, holds no per-window copy
    assert len(ds) == len(tokens) - 100


def test_bad_window_args():
    tokens, offsets = make_stream([5])
    with pytest.raises(ValueError, match="data.mode"):
        TokenWindows(tokens, offsets, 4, 1, "bidirectional")
    with pytest.raises(ValueError, match="stride=0"):
        TokenWindows(tokens, offsets, 4, 0, "causal")


# ----------------------------------------------------------------------------- scoring windows

def covered_targets(plan):
    """Absolute target positions each window of a plan scores."""
    return [list(range(first, end)) for _, end, first in plan]


@pytest.mark.parametrize("context_len", [1, 2, 5, 8, 16])
def test_scoring_plan_scores_every_token_once_with_half_a_window_of_context(context_len):
    for doc_len in range(0, 70):
        plan = scoring_plan(doc_len, context_len)
        scored = [t for ts in covered_targets(plan) for t in ts]
        assert scored == list(range(1, doc_len)), (doc_len, plan)  # each target after BOS, once, in order
        for k, (start, end, first) in enumerate(plan):
            assert 0 <= start < first <= end <= doc_len
            assert end - 1 - start <= context_len  # the input doc[start:end-1] fits the context
            if k == 0:
                assert (start, first) == (0, 1)  # the first window scores all its targets
            else:
                assert end - 1 - start == context_len  # later windows are full ...
                assert end - first <= max(1, context_len // 2)  # ... and score at most their last half
                assert first - start >= context_len - max(1, context_len // 2)  # context of the first scored
        if 0 < doc_len - 1 <= context_len:
            assert plan == [(0, doc_len, 1)]  # a document that fits is one window


def test_scoring_windows_count_each_target_once_and_match_the_plan():
    tokens, offsets = make_stream([3, 20, 7, 1, 13, 0])  # documents of 5 .. 22 tokens and one of 2
    seq_len = 8
    ds = ScoringWindows(tokens, offsets, seq_len)
    x, y = ds.__getitems__(list(range(len(ds))))
    assert x.shape == y.shape == (len(ds), seq_len)
    count = np.zeros(len(tokens), dtype=np.int64)
    row = 0
    for a, b in zip(offsets[:-1], offsets[1:]):
        doc = tokens[a:b].astype(np.int64)
        for start, end, first in scoring_plan(b - a, seq_len):
            inputs = doc[start : end - 1]
            assert x[row, : len(inputs)].tolist() == inputs.tolist()
            assert (x[row, len(inputs) :] == PAD_ID).all()  # right padding
            for j in range(seq_len):
                t = start + 1 + j
                if first <= t < end:
                    assert int(y[row, j]) == doc[t]
                    count[a + t] += 1
                else:
                    assert int(y[row, j]) == IGNORE_INDEX
            row += 1
    assert row == len(ds)
    is_bos = np.zeros(len(tokens), dtype=bool)
    is_bos[offsets[:-1]] = True
    assert (count[~is_bos] == 1).all() and (count[is_bos] == 0).all()  # every token after BOS: once
    assert ds.n_targets() == int((y != IGNORE_INDEX).sum()) == len(tokens) - (len(offsets) - 1)
    xi, yi = ds[len(ds) - 1]
    assert xi.tolist() == x[-1].tolist() and yi.tolist() == y[-1].tolist()


def test_scoring_windows_of_an_empty_split():
    ds = ScoringWindows(np.zeros(0, dtype=np.uint16), np.zeros(1, dtype=np.int64), 8)
    assert len(ds) == 0 and ds.n_targets() == 0
    x, y = ds.__getitems__([])
    assert x.shape == (0, 8) and y.shape == (0, 8)
