"""The Transformer's music-aware position (``model.bar_position``): each token's place in the bar
and bar number, read causally off the ids through per-id tables, embedded beside RoPE's token
position. Off, the model is the one it was; on, cached decoding gives the full forward's logits,
the signal never looks ahead, a REMI run trains and loads back with its tables, and tokenisers
without bars and the Hugging Face export are refused in one line."""

import pytest
import torch

from musicgen.config import compose
from musicgen.constants import BOS_ID, EOS_ID
from musicgen.errors import ConfigError
from musicgen.generation.engine import NextTokenLogits
from musicgen.models import MusicTransformer, TransformerConfig

V = 40
BAR, POS0, BAR_POS4 = 4, 5, 13  # Bar; Position_0..7 at ids 5..12; a merged "Bar Position_4" (BPE-like)
TINY = dict(vocab_size=V, n_layers=2, n_heads=4, d_model=32, d_ff=64, max_seq_len=64, dropout=0.0)


def tables() -> tuple[torch.Tensor, torch.Tensor]:
    count, sets = torch.zeros(V, dtype=torch.long), torch.zeros(V, dtype=torch.long)
    count[BAR], sets[BAR] = 1, 1
    sets[POS0:POS0 + 8] = torch.arange(1, 9)
    count[BAR_POS4], sets[BAR_POS4] = 1, 5
    return count, sets


def tiny(**overrides) -> MusicTransformer:
    torch.manual_seed(0)
    net = MusicTransformer(**{**TINY, "bar_position": True, "bar_grid": 8, "bar_period": 2, **overrides}).eval()
    net.set_bar_tables(*tables())
    return net


def music(n: int, seed: int) -> torch.Tensor:
    """(1, n): BOS, then bars of positions and other tokens drawn at random."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.tensor([BOS_ID]), torch.randint(BAR, V, (n - 1,), generator=g)])[None]


def test_off_by_default_and_nothing_changes_when_off():
    assert TransformerConfig().bar_position is False
    torch.manual_seed(0)
    plain = MusicTransformer(**TINY).eval()
    torch.manual_seed(0)
    off = MusicTransformer(**TINY, bar_position=False, bar_grid=8, bar_period=3).eval()
    assert list(off.state_dict()) == list(plain.state_dict())  # no new parameters or buffers
    idx = music(20, 0)
    with torch.no_grad():
        torch.testing.assert_close(off(idx), plain(idx), atol=0, rtol=0)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="bar_grid=None: bar_position=true needs"):
        TransformerConfig(bar_position=True)
    with pytest.raises(ValueError, match="bar_period=0 must be a positive integer"):
        TransformerConfig(bar_period=0)
    with pytest.raises(ValueError, match="positions must lie in 0..8"):
        tiny().set_bar_tables(torch.zeros(V), torch.full((V,), 9))


def test_bar_state_counts_from_the_document_start():
    net = tiny()
    #            BOS  x   Bar Pos2 x  Pos5 Bar+P4 x  EOS BOS Pos1 Bar  x
    ids = [BOS_ID, 20, BAR, 7, 21, 10, BAR_POS4, 22, EOS_ID, BOS_ID, 6, BAR, 23]
    pos, bar = net.bar_state(torch.tensor([ids]))
    assert pos[0].tolist() == [0, 0, 1, 3, 3, 6, 5, 5, 5, 0, 2, 1, 1]
    assert bar[0].tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2, 0, 0, 1, 1]  # period 2: bar lines 1, 2, then 1 again
    # a window that starts inside a document counts from its first token
    pos, bar = net.bar_state(torch.tensor([[21, 10, BAR, 20, BAR, BAR, 6]]))
    assert pos[0].tolist() == [0, 6, 1, 1, 1, 1, 2] and bar[0].tolist() == [0, 0, 1, 1, 2, 1, 1]


@torch.no_grad()
def test_the_position_signal_is_causal():
    net = tiny()
    idx = music(40, 1)
    full = net(idx)
    for t in (5, 17, 30):
        other = idx.clone()
        other[0, t + 1:] = torch.tensor([BAR, BAR_POS4, POS0 + 7] * 20)[: 40 - t - 1]  # a different future
        torch.testing.assert_close(net(other)[:, : t + 1], full[:, : t + 1], atol=0, rtol=0)
    pos, bar = net.bar_state(idx)
    assert pos.max() > 0 and bar.max() > 0  # the test sequence has bars and positions to read


@torch.no_grad()
def test_cached_decoding_gives_the_full_forward():
    net = tiny()
    idx = torch.cat([music(40, 2), music(40, 3)])  # (2, 40)
    full = net(idx)  # (2, 40, V)
    net.setup_cache(2, 64)
    steps = [net(idx[:, :12], input_pos=torch.arange(12))]  # prefill
    steps += [net(idx[:, t:t + 1], input_pos=torch.tensor([t])) for t in range(12, 40)]  # one token at a time
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    # the cache kept from that longer context: its stale ids past a new prefill are never read
    short = music(20, 4)
    again = net(short, input_pos=torch.arange(20))
    net.clear_cache()
    torch.testing.assert_close(again, net(short), atol=1e-5, rtol=0)


@torch.no_grad()
def test_the_engine_decodes_the_same_with_and_without_the_cache():
    """Greedy steps over a context longer than the window (the slide policy): the cached path
    and plain full forwards over the same contexts give the same logits."""
    net = tiny(max_seq_len=24)
    seq = music(50, 5)
    cached = NextTokenLogits(net, 1, use_cache=True, overflow="slide")
    plain = NextTokenLogits(net, 1, use_cache=False, overflow="slide")
    for n in range(10, 50, 3):
        torch.testing.assert_close(cached.next_logits(seq[:, :n]), plain.next_logits(seq[:, :n]), atol=1e-5,
                                   rtol=0)
    cached.close()


def test_remi_tables_and_pitch_strings_refused():
    from musicgen.tokenizers import PitchTokenizer, RemiTokenizer
    from musicgen.tokenizers.bars import bar_position_tables

    tok = RemiTokenizer()
    count, sets, grid = bar_position_tables(tok, tok.vocab_size + 3)  # 3 extra ids (attribute tokens) set nothing
    bar_id = next(v for v in range(tok.vocab_size) if tok.tokens([v]) == ["Bar_None"])
    pos8 = next(v for v in range(tok.vocab_size) if tok.tokens([v]) == ["Position_8"])
    assert grid == 32 and count[bar_id] == 1 and sets[bar_id] == 1 and sets[pos8] == 9
    assert count.sum() == 1 and (sets > 0).sum() == 33 and not sets[-3:].any()
    with pytest.raises(ConfigError, match="needs a tokeniser with bars and positions .* PitchTokenizer has none"):
        bar_position_tables(PitchTokenizer(), 10)


def test_preflight_refuses_pitch_strings_in_one_line():
    from musicgen.training.preflight import preflight

    cfg = compose("train", ["+version=v7", "tokenizer=pitch", "model.vocab_size=null", "model.bar_position=true"])
    with pytest.raises(ConfigError, match="model.bar_position=true needs a tokeniser with bars") as e:
        preflight(cfg)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def bar_run(tmp_path_factory, prepared_data_dir):
    from helpers import smoke_override_list

    from musicgen.training.fit import train

    tmp = tmp_path_factory.mktemp("bar_position")
    train(compose("train", ["+version=v7", "model.bar_position=true", *smoke_override_list(tmp, prepared_data_dir)]))
    return tmp / "run"


def test_a_remi_run_trains_and_loads_back_with_its_tables(bar_run):
    from musicgen.api import MusicModel
    from musicgen.tokenizers.bars import bar_position_tables

    m = MusicModel.load(bar_run, "cpu")
    net = m.net
    assert net.config.bar_position and net.config.bar_grid == 32  # resolved from the tokeniser
    count, sets, _ = bar_position_tables(m.tokenizer, net.config.vocab_size)
    assert torch.equal(net.bar_count, torch.from_numpy(count)) and torch.equal(net.bar_sets, torch.from_numpy(sets))
    assert (net.bar_sets > 0).sum() > 32  # BPE ids that hold a Position set it too
    pieces = m.generate(2, seed=0, max_new_tokens=16)
    assert len(pieces) == 2


def test_hf_export_refuses_bar_position_in_one_line(bar_run, tmp_path):
    from musicgen.checkpoint.hf import export_hf

    with pytest.raises(ConfigError, match="model.bar_position=true: Llama has no bar/beat position") as e:
        export_hf(bar_run, tmp_path / "hf")
    assert "\n" not in str(e.value)
