"""Grammar-valid decoding on real tokenisers (REMI, REMI + BPE trained on real tunes, pitch
strings): no syntax errors by construction under random and adversarial logits, a mask that never
empties, real pieces admitted token by token, and MidiTok's own check agreeing inside a piece."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import symusic
import torch
import torch.nn as nn

from musicgen.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from musicgen.evaluation.scoring import sample_ngram
from musicgen.generation import SamplingConfig, generate, grammar_for, sampling_grammar
from musicgen.generation import grammar as grammar_module
from musicgen.metrics import NgramLM
from musicgen.metrics.samples import body
from musicgen.models import MusicTransformer
from musicgen.tokenizers import PitchTokenizer, RemiTokenizer

KINDS = ("remi", "remi_bpe", "remi_ts", "remi_bpe_ts", "pitch")
REMI_KINDS = ("remi", "remi_bpe", "remi_ts", "remi_bpe_ts")  # _ts: with time signatures (conditioning=full)
UNIFORM = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0)
GREEDY = SamplingConfig(greedy=True)


@pytest.fixture(scope="module")
def midi_files(folk_midi_files, chorale_midi_files):
    return [*folk_midi_files, *chorale_midi_files]  # chorales: chords, several parts merged


@pytest.fixture(scope="module")
def tokenizers(midi_files, folk_midi_files):
    bpe = RemiTokenizer(bpe_vocab_size=512)
    bpe.train(folk_midi_files[:10])
    bpe_ts = RemiTokenizer(bpe_vocab_size=512, use_time_signatures=True)
    bpe_ts.train(folk_midi_files[:10])
    pitch = PitchTokenizer()
    pitch.train(midi_files)
    return {"remi": RemiTokenizer(), "remi_bpe": bpe, "remi_ts": RemiTokenizer(use_time_signatures=True),
            "remi_bpe_ts": bpe_ts, "pitch": pitch}


@pytest.fixture(scope="module")
def grammars(tokenizers):
    return {kind: grammar_for(tok) for kind, tok in tokenizers.items()}


def block_chords() -> symusic.Score:
    """Triads MidiTok detects as Chord tokens (the exported chorales have none: their voices move
    at different times), then a rest across the bar line: REMI writes Rest, Rest, Position_1
    without a Bar token, a Position earlier than the one before the rest."""
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    for k, root in enumerate((60, 65, 67, 60)):
        track.notes.extend(symusic.Note(k * 960, 960, root + step, 80) for step in (0, 4, 7))
    track.notes.append(symusic.Note(4 * 960 + 2000, 240, 72, 80))
    score.tracks.append(track)
    score.tempos.append(symusic.Tempo(0, 100.0))
    return score


@pytest.fixture(scope="module")
def pieces(tokenizers, midi_files):
    """Token ids of every real test piece and of ``block_chords``, per tokeniser (without BOS/EOS)."""
    return {kind: [tok.encode(f) for f in [*midi_files, block_chords()]] for kind, tok in tokenizers.items()}


class LogitsModel(nn.Module):
    """A mock decoder: ``fn(idx (B, T)) -> logits (B, V)`` over the whole sequence so far."""

    def __init__(self, vocab_size: int, fn, context_len: int = 4096):
        super().__init__()
        self.vocab_size, self.context_len, self.fn = vocab_size, context_len, fn

    def forward(self, idx, last_only=False):
        assert last_only
        return self.fn(idx)


def random_model(vocab_size: int, seed: int = 0, scale: float = 4.0) -> LogitsModel:
    g = torch.Generator().manual_seed(seed)
    return LogitsModel(vocab_size, lambda idx: torch.randn(idx.size(0), vocab_size, generator=g) * scale)


def favouring(vocab_size: int, favoured, seed: int = 0) -> LogitsModel:
    """Random logits plus +50 on ``favoured(idx) -> (B, V) bool``: the tokens it pushes for."""
    g = torch.Generator().manual_seed(seed)

    def fn(idx):
        return torch.randn(idx.size(0), vocab_size, generator=g) + 50.0 * favoured(idx).float()

    return LogitsModel(vocab_size, fn)


def rejected_now(grammar):
    """The adversary that always favours what the grammar rejects in the current state."""

    def favoured(idx):
        return ~grammar.allowed[grammar.feed(grammar.initial(idx.size(0)), idx)]

    return favoured


def tokens_where(tok, predicate) -> torch.Tensor:
    """(V,) bool: REMI ids whose base expansion has a token satisfying ``predicate(str)``."""
    return torch.tensor([any(map(predicate, tok.tokens([v]))) for v in range(tok.vocab_size)])


def assert_valid(tok, out: torch.Tensor, prompt_len: int = 1):
    for row in out.tolist():
        new = row[prompt_len:]
        new = new[: new.index(EOS_ID) + 1] if EOS_ID in new else new
        assert PAD_ID not in new and BOS_ID not in new and UNK_ID not in new
        assert tok.syntax_errors(row[:prompt_len] + new) == 0
        assert tok.syntax_errors(body(row)) == 0


# ----------------------------------------------------------------------------- tables


@pytest.mark.parametrize("kind", KINDS)
def test_mask_never_empties_and_tables_are_consistent(grammars, tokenizers, kind):
    g, tok = grammars[kind], tokenizers[kind]
    assert g.vocab_size == tok.vocab_size
    assert g.allowed.any(dim=1).all()  # every state admits a token
    assert g.next_state.min() >= 0 and g.next_state.max() < g.n_states
    assert not g.allowed[:, [BOS_ID, UNK_ID]].any()  # never BOS or UNK
    end = int(g.next_state[g.start, EOS_ID])
    assert g.allowed[end].nonzero().flatten().tolist() == [PAD_ID]  # after EOS: padding only
    assert not g.allowed[g.start, EOS_ID]  # no empty piece
    assert not g.allowed[g.start, PAD_ID]


def test_bpe_tables_compose_the_base_grammar(grammars, tokenizers):
    """A merged token is admitted exactly when its base expansion is, walked in the REMI grammar."""
    base, bpe, tok = grammars["remi"], grammars["remi_bpe"], tokenizers["remi_bpe"]
    assert bpe.n_states == base.n_states and bpe.start == base.start
    merged = [v for v in range(tok.vocab_size) if len(tok.tokens([v])) > 1]
    assert len(merged) > 50
    ids = {t: i for i, t in enumerate(tok.tokens(range(base.vocab_size)))}
    for v in merged:
        states, ok = torch.arange(base.n_states), torch.ones(base.n_states, dtype=torch.bool)
        for b in (ids[t] for t in tok.tokens([v])):  # walk the expansion from every state at once
            ok &= base.allowed[states, b]
            states = base.next_state[states, b]
        assert torch.equal(bpe.allowed[:, v], ok) and torch.equal(bpe.next_state[:, v], states)


# ----------------------------------------------------------------------------- real pieces


@pytest.mark.parametrize("kind", KINDS)
def test_real_pieces_are_admitted_token_by_token(grammars, pieces, tokenizers, kind):
    g = grammars[kind]
    assert len(pieces[kind]) == 16
    after_bos = int(g.advance(g.initial(1), torch.tensor([BOS_ID])))
    assert after_bos == g.start
    for ids in pieces[kind]:
        assert tokenizers[kind].syntax_errors(ids) == 0
        assert g.first_rejected([*ids, EOS_ID, PAD_ID, PAD_ID]) is None  # the piece, its end, padding
    if kind != "pitch":
        kinds = {t.split("_")[0] for ids in pieces[kind] for t in tokenizers[kind].tokens(ids)}
        assert {"Bar", "Position", "Pitch", "Velocity", "Duration", "Chord", "Tempo", "Rest"} <= kinds


@pytest.mark.parametrize("kind", REMI_KINDS)
def test_inside_a_piece_the_mask_is_exactly_miditoks_check(grammars, tokenizers, kind):
    """From random valid prefixes, a candidate token is admitted iff MidiTok's check finds no error
    in prefix + token (except what the grammar adds on purpose: EOS placement, PitchDrum, specials)."""
    g, tok = grammars[kind], tokenizers[kind]
    never = tokens_where(tok, lambda t: t.startswith("PitchDrum"))
    out = generate(random_model(tok.vocab_size, seed=1), torch.full((8, 1), BOS_ID), 120, UNIFORM,
                   torch.Generator().manual_seed(1), grammar=g)
    rng = np.random.default_rng(0)
    checked = 0
    for row in out.tolist():
        for n in rng.choice(np.arange(2, len(row)), size=6, replace=False):
            prefix = body(row[:n])
            if len(prefix) < n - 1:
                continue  # ended before n
            state = int(g.feed(g.initial(1), torch.tensor([[BOS_ID, *prefix]])))
            for v in rng.choice(np.arange(4, tok.vocab_size), size=12, replace=False).tolist():
                if never[v] or not tok.tokens([v]):
                    continue
                assert bool(g.allowed[state, v]) == (tok.syntax_errors(prefix + [v]) == 0), (prefix[-4:], v)
                checked += 1
    assert checked > 300


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cfg", [UNIFORM, SamplingConfig(),
                                 SamplingConfig(min_p=0.05, top_k=0, top_p=1.0, repetition_penalty=1.5)])
def test_random_logits_give_no_syntax_errors(grammars, tokenizers, kind, cfg):
    g, tok = grammars[kind], tokenizers[kind]
    for seed, scale in ((0, 1.0), (1, 8.0)):
        out = generate(random_model(tok.vocab_size, seed, scale), torch.full((8, 1), BOS_ID), 250, cfg,
                       torch.Generator().manual_seed(seed), grammar=g, stop_at_eos=True)
        assert_valid(tok, out)


def test_unconstrained_random_logits_do_make_errors(grammars, tokenizers):
    """The same decoding without the mask (constrained=false, or no grammar) is full of errors."""
    tok, g = tokenizers["remi_bpe"], grammars["remi_bpe"]
    free = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, constrained=False)
    a = generate(random_model(tok.vocab_size), torch.full((4, 1), BOS_ID), 100, free,
                 torch.Generator().manual_seed(0), grammar=g)
    b = generate(random_model(tok.vocab_size), torch.full((4, 1), BOS_ID), 100, free,
                 torch.Generator().manual_seed(0))
    assert torch.equal(a, b)  # constrained=false ignores the grammar
    assert sum(tok.syntax_errors(row) for row in a.tolist()) > 50


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("adversary", ["rejected", "pad", "bos", "eos", "unk", "specials"])
@pytest.mark.parametrize("greedy", [False, True])
def test_adversarial_logits_give_no_syntax_errors(grammars, tokenizers, kind, adversary, greedy):
    g, tok = grammars[kind], tokenizers[kind]
    V = tok.vocab_size

    def fixed(ids):
        mask = torch.zeros(V, dtype=torch.bool)
        mask[ids] = True
        return lambda idx: mask.expand(idx.size(0), V)

    favoured = {"rejected": rejected_now(g), "pad": fixed([PAD_ID]), "bos": fixed([BOS_ID]),
                "eos": fixed([EOS_ID]), "unk": fixed([UNK_ID]), "specials": fixed([PAD_ID, BOS_ID, UNK_ID])}[adversary]
    cfg = GREEDY if greedy else SamplingConfig()
    out = generate(favouring(V, favoured), torch.full((4, 1), BOS_ID), 120, cfg,
                   torch.Generator().manual_seed(0), grammar=g, stop_at_eos=True)
    assert_valid(tok, out)
    if adversary == "eos":  # it ends as soon as a piece may end: after its first note
        for row in out.tolist():
            assert EOS_ID in row
            if kind != "pitch":
                assert tok.tokens(body(row))[-1].startswith("Duration")
                assert sum(t.startswith("Pitch") for t in tok.tokens(body(row))) >= 1


@pytest.mark.parametrize("kind", REMI_KINDS)
@pytest.mark.parametrize("target", ["backwards", "position_0", "pitchdrum", "bar_then_eos"])
def test_adversaries_that_push_against_time_and_types(grammars, tokenizers, kind, target):
    g, tok = grammars[kind], tokenizers[kind]
    if target == "backwards":  # favour any token that goes back to an earlier or the same position
        favoured = rejected_now(g)
        masks = tokens_where(tok, lambda t: t.startswith("Position"))
        inner = favoured
        favoured = lambda idx: inner(idx) & masks  # noqa: E731
    elif target == "position_0":
        masks = tokens_where(tok, lambda t: t == "Position_0")
        favoured = lambda idx: masks.expand(idx.size(0), -1)  # noqa: E731
    elif target == "pitchdrum":
        masks = tokens_where(tok, lambda t: t.startswith("PitchDrum"))
        favoured = lambda idx: masks.expand(idx.size(0), -1)  # noqa: E731
    else:
        masks = tokens_where(tok, lambda t: t == "Bar_None")
        masks[EOS_ID] = True
        favoured = lambda idx: masks.expand(idx.size(0), -1)  # noqa: E731
    out = generate(favouring(tok.vocab_size, favoured), torch.full((4, 1), BOS_ID), 150, SamplingConfig(),
                   torch.Generator().manual_seed(0), grammar=g, stop_at_eos=True)
    assert_valid(tok, out)
    for row in out.tolist():
        assert not any(t.startswith("PitchDrum") for t in tok.tokens(body(row)))


@pytest.mark.parametrize("kind", KINDS)
def test_prompts_are_fed_through_the_grammar_first(grammars, tokenizers, pieces, kind):
    """Openings of real pieces cut anywhere (mid-note, mid-bar) continue validly, even under an
    adversary that always favours an invalid token."""
    g, tok = grammars[kind], tokenizers[kind]
    for ids in pieces[kind][::5]:
        for cut in (1, 2, 3, 5, 8, 13):
            prompt = torch.tensor([[BOS_ID, *ids[:cut]]] * 2)
            out = generate(favouring(tok.vocab_size, rejected_now(g)), prompt, 24, SamplingConfig(),
                           torch.Generator().manual_seed(cut), grammar=g, stop_at_eos=True)
            assert_valid(tok, out, prompt_len=prompt.size(1))


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_random_init_model_is_valid_when_constrained(grammars, tokenizers, pieces, kind):
    g, tok = grammars[kind], tokenizers[kind]
    torch.manual_seed(0)
    net = MusicTransformer(vocab_size=tok.vocab_size, n_layers=2, n_heads=2, d_model=32, d_ff=64,
                           max_seq_len=256, dropout=0.0).eval()
    prompt = torch.tensor([[BOS_ID, *ids[:6]] for ids in pieces[kind][::4]])  # 4 real openings
    constrained = generate(net, prompt, 120, GREEDY, grammar=g, stop_at_eos=True)
    assert_valid(tok, constrained, prompt_len=prompt.size(1))
    cached = generate(net, prompt, 120, GREEDY, grammar=g, stop_at_eos=True, use_cache=False)
    assert torch.equal(constrained, cached)  # greedy agrees with and without the KV cache under the mask


def test_ngram_samples_are_constrained_too(grammars, tokenizers, pieces):
    tok, g = tokenizers["remi_bpe"], grammars["remi_bpe"]
    lm = NgramLM(order=3, vocab_size=tok.vocab_size).fit([np.array([BOS_ID, *p, EOS_ID]) for p in pieces["remi_bpe"]])
    rng = np.random.default_rng(0)
    hot = SamplingConfig(temperature=2.0, top_k=0, top_p=1.0)
    for _ in range(8):
        ids, _ = sample_ngram(lm, 300, hot, rng, grammar=g)
        assert tok.syntax_errors(ids) == 0


# ----------------------------------------------------------------------------- choosing a grammar


def test_sampling_grammar_follows_constrained_and_warns_once_without_a_grammar(tokenizers, caplog, monkeypatch):
    assert sampling_grammar(tokenizers["remi"], SamplingConfig(constrained=False)) is None
    assert sampling_grammar(tokenizers["remi"], SamplingConfig()) is not None

    class NoGrammar:
        kind = "mystery"

    monkeypatch.setattr(grammar_module, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="musicgen.generation.grammar"):
        assert sampling_grammar(NoGrammar(), SamplingConfig()) is None
        assert sampling_grammar(NoGrammar(), SamplingConfig()) is None
    assert [r.getMessage() for r in caplog.records].count(
        "sampling.constrained=true: the mystery tokeniser has no grammar, so decoding is unconstrained") == 1


def test_unsupported_remi_options_have_no_grammar(caplog):
    with caplog.at_level(logging.WARNING, logger="musicgen.generation.grammar"):
        assert grammar_for(RemiTokenizer(use_programs=True)) is None
    assert "use_programs" in caplog.text


def test_time_signature_pieces_keep_their_bars(grammars, tokenizers, pieces):
    """Real 6/8 and 3/4 tunes with time-signature tokens are admitted, and a Position after
    Rest -> TimeSig may go back (MidiTok's exemption), but not after Bar -> TimeSig."""
    tok, g = tokenizers["remi_ts"], grammars["remi_ts"]
    ids = tok.backend.vocab  # base tokens -> ids (no BPE here)
    names = {t.split("_")[0] for p in pieces["remi_ts"] for t in tok.tokens(p)}
    assert "TimeSig" in names
    bar, ts, rest = ids["Bar_None"], ids["TimeSig_6/8"], next(v for k, v in ids.items() if k.startswith("Rest_"))
    pos = [ids[f"Position_{k}"] for k in (0, 4)]
    note = [ids["Pitch_60"], next(v for k, v in ids.items() if k.startswith("Velocity_")),
            next(v for k, v in ids.items() if k.startswith("Duration_"))]
    assert g.first_rejected([bar, ts, pos[1], *note, rest, ts, pos[0], *note]) is None
    assert g.first_rejected([bar, ts, pos[1], *note, bar, ts, pos[0], *note]) is None
    assert g.first_rejected([bar, ts, pos[1], *note, pos[0]]) == 6  # back in time within the bar
    assert g.first_rejected([bar, pos[0]]) == 1  # a bar starts with its time signature


def test_mask_rejects_logits_of_another_vocabulary(grammars):
    g = grammars["remi"]
    with pytest.raises(ValueError, match="covers 362 tokens, the logits 100"):
        g.mask(torch.zeros(1, 100), g.initial(1))


def test_grammar_moves_to_the_logits_device_once(grammars):
    g = grammars["pitch"]
    assert g.to("cpu") is g and g.to(torch.device("cpu")) is g
