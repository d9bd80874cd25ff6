"""Scoring (issue 11): each token scored once within the trained context; seq2one scored as it
trained; a sample is one piece ending at EOS; the n-gram is decoded by the model's rules; the
reference is the untransposed training pieces; pitch range from everything trained on."""

import numpy as np
import pytest
import symusic
import torch
import torch.nn.functional as F

from musicgen.data.cache import SplitTokens
from musicgen.evaluation.scoring import sample_ngram
from musicgen.generation import SamplingConfig, generate
from musicgen.metrics import NgramLM
from musicgen.metrics.likelihood import doc_nll, scoring_plan, seq2one_nll
from musicgen.metrics.samples import body, sample_figures, training_reference
from musicgen.metrics.samples import piece_stats as stats_of
from musicgen.models import MelodyLSTM, MusicTransformer
from musicgen.tokenizers import RemiTokenizer

# a bigram over 6 ids whose training data makes id 4 most likely after every token
DOCS = [np.array([1, 4, 5, 4, 5, 4, 2]), np.array([1, 4, 4, 5, 4, 2]), np.array([1, 3, 4, 5, 4, 2])]


def lm() -> NgramLM:
    return NgramLM(order=2, vocab_size=6).fit(DOCS)


def test_top_k_1_and_greedy_give_the_most_likely_token_every_time():
    model = lm()
    greedy, _ = sample_ngram(model, 12, SamplingConfig(greedy=True), np.random.default_rng(0))
    for seed in range(5):  # top-k 1 leaves one token: every seed draws the greedy path
        assert sample_ngram(model, 12, SamplingConfig(top_k=1), np.random.default_rng(seed))[0] == greedy
    history = [model.bos_id]
    for token in greedy:
        assert token == int(np.argmax(model.prob_dist(history)))
        history.append(token)


def outside_top_2(model: NgramLM, tokens: list[int]) -> int:
    """How many tokens were less likely than the second most likely after their history."""
    history, count = [model.bos_id], 0
    for token in tokens:
        p = model.prob_dist(history)
        count += p[token] < np.sort(p)[-2]  # ties with the second survive top-k, as for the model
        history.append(token)
    return count


def test_filters_change_what_the_ngram_emits():
    model = lm()
    plain = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0)
    top_2 = SamplingConfig(temperature=1.0, top_k=2, top_p=1.0)
    rngs = [np.random.default_rng(seed) for seed in range(20)]
    assert sum(outside_top_2(model, sample_ngram(model, 30, top_2, rng)[0]) for rng in rngs) == 0
    rngs = [np.random.default_rng(seed) for seed in range(20)]
    assert sum(outside_top_2(model, sample_ngram(model, 30, plain, rng)[0]) for rng in rngs) > 0


def test_an_ngram_sample_is_one_piece_ending_at_its_eos():
    model = lm()  # every training document ends with EOS after 4 or 5 tokens
    plain = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0)
    pieces = [sample_ngram(model, 200, plain, np.random.default_rng(seed)) for seed in range(20)]
    assert all(ended for _, ended in pieces)
    assert all(2 not in ids and 1 not in ids for ids, _ in pieces)  # no EOS/BOS inside: nothing glued on
    assert np.mean([len(ids) for ids, _ in pieces]) < 20
    capped, ended = sample_ngram(model, 3, SamplingConfig(greedy=True), np.random.default_rng(0))
    assert len(capped) == 3 and not ended


def test_body_ends_at_the_first_eos():
    assert body([1, 7, 8, 2, 1, 9, 2]) == [7, 8]
    assert body([7, 0, 8]) == [7, 8]


def _tiny_transformer(vocab=12, max_seq_len=64):
    torch.manual_seed(0)
    net = MusicTransformer(vocab_size=vocab, n_layers=1, n_heads=2, d_model=16, d_ff=32, max_seq_len=max_seq_len)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(8)  # sharp attention: what it predicts depends on the context it sees
    return net.eval()


def test_doc_nll_scores_every_token_once_within_the_given_context():
    """The reference: token t predicted from doc[max(0, window start): t], windows as the plan
    lays them; so the score of a long document depends on the context it is given."""
    net = _tiny_transformer()
    rng = np.random.default_rng(0)
    docs = [np.concatenate([[1], rng.integers(4, 12, size=n), [2]]) for n in (5, 30, 50)]
    full = doc_nll(net, docs, context_len=64)
    with torch.no_grad():  # one pass over each whole document: every token once, full context
        want = [float(F.cross_entropy(net(torch.as_tensor(d[None, :-1])).float()[0], torch.as_tensor(d[1:]),
                                      reduction="sum")) for d in docs]
    assert full == pytest.approx(want, rel=1e-4)
    short = doc_nll(net, docs, context_len=16)
    with torch.no_grad():  # each window of the plan, one pass each, only its scored targets
        want = [sum(float(F.cross_entropy(net(torch.as_tensor(d[None, a:b - 1])).float()[0, first - a - 1:],
                                          torch.as_tensor(d[first:b]), reduction="sum"))
                    for a, b, first in scoring_plan(len(d), 16)) for d in docs]
    assert short == pytest.approx(want, rel=1e-4)
    assert short[0] == pytest.approx(full[0], rel=1e-4)  # fits 16 tokens: the same
    assert abs(short[2] - full[2]) > 1e-3 * full[2]  # 51 targets, at most 16 tokens of context


def test_a_context_prefix_is_seen_but_not_scored():
    """A conditioned run's attribute tokens after BOS: context for every later target, never targets,
    and over the first ``n_out`` ids only (short windows too: the first window holds the prefix)."""
    net = _tiny_transformer()
    rng = np.random.default_rng(1)
    docs = [np.concatenate([[1], [10, 11], rng.integers(4, 10, size=n), [2]]) for n in (6, 40)]
    for context in (64, 16):
        got = doc_nll(net, docs, context_len=context, n_out=10, n_context=2)
        def scored(d, a, b, first):  # the window's targets from max(first, 3): after BOS and the prefix
            y = torch.as_tensor(d[a + 1:b]).clone()
            y[: max(first, 3) - a - 1] = -100
            return float(F.cross_entropy(net(torch.as_tensor(d[None, a:b - 1])).float()[0, :, :10], y, reduction="sum"))

        with torch.no_grad():
            want = [sum(scored(d, *w) for w in scoring_plan(len(d), context)) for d in docs]
        assert got == pytest.approx(want, rel=1e-4)
        assert (got < doc_nll(net, docs, context_len=context, n_out=12)).all()  # fewer, renormalised targets
    torch.manual_seed(0)
    lstm = MelodyLSTM(vocab_size=12, embedding_dim=8, hidden_sizes=[16], context_len=4).eval()
    got = seq2one_nll(lstm, docs, context_len=4, n_out=10, n_context=2)
    with torch.no_grad():
        want = [sum(float(F.cross_entropy(lstm(torch.as_tensor(d[None, max(0, t - 4):t]), last_only=True)[:, :10],
                                          torch.as_tensor([int(d[t])]))) for t in range(3, len(d))) for d in docs]
    assert got == pytest.approx(want, rel=1e-5)


def test_seq2one_is_scored_the_way_it_trained():
    torch.manual_seed(0)
    net = MelodyLSTM(vocab_size=12, embedding_dim=8, hidden_sizes=[16], context_len=4).eval()
    docs = [np.array([1, 5, 6, 7, 8, 9, 10, 2]), np.array([1, 4, 2])]
    got = seq2one_nll(net, docs, context_len=4)
    with torch.no_grad():
        want = [sum(float(F.cross_entropy(net(torch.as_tensor(d[None, max(0, t - 4):t]), last_only=True).float(),
                                          torch.as_tensor([int(d[t])]))) for t in range(1, len(d))) for d in docs]
    assert got == pytest.approx(want, rel=1e-5)


def test_generation_never_feeds_more_than_the_requested_context():
    net = _tiny_transformer(max_seq_len=64)
    fed = []
    net.register_forward_pre_hook(lambda m, args: fed.append(args[0].size(1)))
    prompt = torch.ones((2, 1), dtype=torch.long)
    generate(net, prompt, 40, SamplingConfig(greedy=True), use_cache=False, context_len=16)
    assert max(fed) == 16
    fed.clear()
    generate(net, prompt, 40, SamplingConfig(greedy=True), use_cache=False)
    assert max(fed) == 40  # without it, the model's own (untrained) 64


def _score(pitches, start=0):
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    track.notes.extend(symusic.Note((start + i) * 480, 480, p, 80) for i, p in enumerate(pitches))
    score.tracks.append(track)
    return score


def _split(tok, named_scores) -> SplitTokens:
    docs, names = [], []
    for name, score in named_scores:
        docs.append([1, *tok.encode(score), 2])
        names.append(name)
    offsets = np.cumsum([0] + [len(d) for d in docs])
    return SplitTokens(np.concatenate(docs).astype(np.uint16), offsets, names,
                       np.array([len(s.tracks[0].notes) for _, s in named_scores]))


def test_reference_uses_untransposed_pieces_and_range_covers_all_trained_pitches():
    tok = RemiTokenizer()
    original = _score([60, 62, 64, 65, 67, 72])
    train = _split(tok, [("folk/a.mid", original), ("folk/a.mid@+5", original.shift_pitch(5))])
    ref = training_reference(tok, train)
    assert ref.pieces == 1
    assert np.nonzero(ref.histograms["pitch"])[0].tolist() == [60, 62, 64, 65, 67, 72]  # not the copy's
    assert ref.pitch_range == (60, 77)  # but the copy's pitches were trained on
    sample = tok.encode(_score([60, 64, 67, 96]))
    stats = stats_of(tok, [sample], ref)
    figures = sample_figures(stats, ref, n_boot=0)
    assert figures["out_of_range_pitch_share"]["value"] == 0.25  # 96 is inside the tokeniser's range
    assert stats["syntax"].tolist() == [[0, len(sample)]]  # base tokens: plain REMI, one per id


def test_copying_of_a_training_piece_and_intervals_over_pieces():
    tok = RemiTokenizer()
    rng = np.random.default_rng(0)
    tunes = [_score(rng.integers(55, 80, size=24).tolist()) for _ in range(6)]
    train = _split(tok, [(f"folk/{i}.mid", s) for i, s in enumerate(tunes)])
    ref = training_reference(tok, train)
    copied = stats_of(tok, [tok.encode(tunes[2])], ref)
    f = sample_figures(copied, ref, n_boot=0)
    assert f["copied_8gram_share"]["value"] == 1.0 and f["longest_copied_run"]["value"] == 24
    fresh = [tok.encode(_score(rng.integers(40, 90, size=24).tolist())) for _ in range(30)]
    g = sample_figures(stats_of(tok, fresh, ref), ref, n_boot=200)
    assert g["copied_8gram_share"]["value"] == 0.0 and g["longest_copied_run"]["value"] < 8
    for figure in g.values():  # every figure has its interval
        assert not np.isnan(figure["low"]) or np.isnan(figure["value"])
        assert figure["low"] <= figure["high"]
    assert g["pitch_class_overlap"]["high"] <= 1.0


def test_a_repeated_prefix_stands_in_for_the_first_context_tokens_of_later_windows():
    """A run trained with every_window: each later window of a long piece reads the prefix in place
    of its first ``n_context`` tokens; the targets are the same, and validation's windows
    (``PrefixScoringWindows``) give the summed NLL evaluation's ``doc_nll`` does."""
    from musicgen.data.prefixed import PrefixScoringWindows, insert_prefixes

    net = _tiny_transformer()
    rng = np.random.default_rng(2)
    bodies = [rng.integers(4, 10, size=n) for n in (6, 40)]
    docs = [np.concatenate([[1], [10, 11], b, [2]]) for b in bodies]
    context = 16
    plain = doc_nll(net, docs, context_len=context, n_out=10, n_context=2)
    before = [d.copy() for d in docs]
    repeated = doc_nll(net, docs, context_len=context, n_out=10, n_context=2, repeat_context=True)
    assert all(np.array_equal(a, b) for a, b in zip(docs, before))  # the caller's documents untouched

    def scored(d, a, b, first):
        x = d[a:b - 1].copy()
        if a > 2:
            x[:2] = d[1:3]  # the prefix in front
        y = torch.as_tensor(d[a + 1:b]).clone()
        y[: max(first, 3) - a - 1] = -100
        return float(F.cross_entropy(net(torch.as_tensor(x[None])).float()[0, :, :10], y, reduction="sum"))

    with torch.no_grad():
        want = [sum(scored(d, *w) for w in scoring_plan(len(d), context)) for d in docs]
    assert repeated == pytest.approx(want, rel=1e-4)
    assert repeated[0] == pytest.approx(plain[0], rel=1e-5)  # one window: nothing to repeat
    assert abs(repeated[1] - plain[1]) > 1e-4 * plain[1]  # later windows see the prefix now

    stream = np.concatenate([np.concatenate([[1], b, [2]]) for b in bodies]).astype(np.uint16)
    offsets = np.cumsum([0] + [len(b) + 2 for b in bodies])
    ps = insert_prefixes(stream, offsets, [[10, 11], [10, 11]])
    assert np.array_equal(ps.tokens, np.concatenate(docs))
    windows = PrefixScoringWindows(ps.tokens, ps.offsets, context, ps.is_prefix, repeat=True, n_prefix=2)
    x, y = windows.__getitems__(list(range(len(windows))))
    later = torch.as_tensor(windows.windows[:, 0] > ps.offsets[np.searchsorted(ps.offsets, windows.windows[:, 0],
                                                                                 side="right") - 1] + 2)
    assert later.sum() >= 2 and (x[later, :2] == torch.tensor([10, 11])).all()
    with torch.no_grad():
        logits = net(x).float()[..., :10]
    total = float(F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-100, reduction="sum"))
    assert total == pytest.approx(sum(repeated), rel=1e-4)
    assert windows.n_targets() == int((y != -100).sum())
