import pytest
import torch
import torch.nn as nn

from musicgen.generation import NextTokenLogits, SamplingConfig, generate
from musicgen.models import MelodyLSTM, MusicTransformer

GREEDY = SamplingConfig(greedy=True)
UNIFORM = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0)
BOS, EOS, PAD = 1, 2, 0


class UniformModel(nn.Module):
    """nanochat-style mock: uniform logits; records what it was fed and in which mode."""

    def __init__(self, vocab_size: int = 11, context_len: int = 8):
        super().__init__()
        self.vocab_size, self.context_len = vocab_size, context_len
        self.fed: list[torch.Tensor] = []
        self.training_flags: list[bool] = []

    def forward(self, idx, last_only=False):
        self.fed.append(idx.clone())
        self.training_flags.append(self.training)
        B, T = idx.shape
        return torch.zeros(B, self.vocab_size) if last_only else torch.zeros(B, T, self.vocab_size)


class CachedMock(UniformModel):
    """Records the cache protocol: (number of tokens, input_pos) per call."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[tuple[int, list[int]]] = []
        self.cache_setups: list[tuple[int, int]] = []
        self.cleared = 0

    def setup_cache(self, batch_size, max_len):
        self.cache_setups.append((batch_size, max_len))

    def clear_cache(self):
        self.cleared += 1

    def forward(self, idx, input_pos=None, last_only=False):
        self.calls.append((idx.size(1), None if input_pos is None else input_pos.tolist()))
        return super().forward(idx, last_only)


class ScriptedModel(UniformModel):
    """Greedy-decodes script[row][step] (one-hot logits)."""

    def __init__(self, script, vocab_size=11):
        super().__init__(vocab_size=vocab_size, context_len=64)
        self.script, self.step = torch.tensor(script), 0

    def forward(self, idx, last_only=False):
        logits = torch.zeros(idx.size(0), self.vocab_size)
        logits[torch.arange(idx.size(0)), self.script[:, self.step]] = 10.0
        self.step += 1
        return logits


def tiny_transformer(max_seq_len=16, **kw) -> MusicTransformer:
    torch.manual_seed(0)
    fields = dict(vocab_size=23, n_layers=2, n_heads=4, d_model=64, d_ff=128, max_seq_len=max_seq_len, dropout=0.0)
    return MusicTransformer(**{**fields, **kw}).eval()


# --- loop mechanics with mocks ------------------------------------------------------------------
def test_uniform_mock_loop_mechanics():
    model = UniformModel(vocab_size=11, context_len=8)
    model.train()
    prompt = torch.tensor([[BOS, 5, 6], [BOS, 7, 8]])
    seen = []
    out = generate(model, prompt, 12, UNIFORM, torch.Generator().manual_seed(0),
                   progress=lambda i, n: seen.append((i, n)))
    assert out.shape == (2, 15) and out.dtype == torch.long
    assert torch.equal(out[:, :3], prompt)
    assert ((out >= 0) & (out < 11)).all()
    assert seen == [(i, 12) for i in range(1, 13)]
    assert len(model.fed) == 12 and not any(model.training_flags)  # eval while generating
    assert model.training  # and the flag comes back
    # no cache: a true sliding window of context_len, each call fed the newest tokens
    assert [x.size(1) for x in model.fed] == [3, 4, 5, 6, 7, 8, 8, 8, 8, 8, 8, 8]
    for i, x in enumerate(model.fed):
        n = 3 + i
        assert torch.equal(x, out[:, max(0, n - 8) : n])


def test_uniform_mock_samples_every_token_and_rows_differ():
    out = generate(UniformModel(vocab_size=11), torch.full((4, 1), BOS), 200, UNIFORM, torch.Generator().manual_seed(0))
    assert set(out[:, 1:].flatten().tolist()) == set(range(11))
    assert len({tuple(r) for r in out.tolist()}) == 4


def test_seeded_generation_is_reproducible():
    model = tiny_transformer()
    prompt = torch.full((3, 1), BOS)
    cfg = SamplingConfig(temperature=1.5, top_k=0, top_p=1.0)
    a = generate(model, prompt, 20, cfg, torch.Generator().manual_seed(42))
    b = generate(model, prompt, 20, cfg, torch.Generator().manual_seed(42))
    c = generate(model, prompt, 20, cfg, torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "overflow, expected",
    [
        # W=8, margin 2 -> keep 6. prompt 3, 10 new tokens: context lengths n = 3..12
        ("slide", [(3, [0, 1, 2]), (1, [3]), (1, [4]), (1, [5]), (1, [6]), (1, [7]),
                   (6, [0, 1, 2, 3, 4, 5]), (1, [6]), (1, [7]), (6, [0, 1, 2, 3, 4, 5])]),
        ("reset", [(3, [0, 1, 2]), (1, [3]), (1, [4]), (1, [5]), (1, [6]), (1, [7]),
                   (1, [0]), (1, [1]), (1, [2]), (1, [3])]),
        ("window", [(3, [0, 1, 2]), (1, [3]), (1, [4]), (1, [5]), (1, [6]), (1, [7])]
                   + [(8, list(range(8)))] * 4),
    ],
)
def test_cache_protocol_prefill_decode_and_overflow(overflow, expected):
    model = CachedMock(context_len=8)
    generate(model, torch.tensor([[BOS, 4, 5]] * 2), 10, UNIFORM, overflow=overflow, slide_margin=2)
    assert model.cache_setups == [(2, 8)]
    assert model.calls == expected
    assert model.cleared == 1


def test_stop_at_eos_pads_finished_rows_and_stops_early():
    script = [[4, 5, EOS, 6, 7, 8, 9], [4, 5, 6, 7, EOS, 8, 9]]
    model = ScriptedModel(script)
    prompt = torch.full((2, 1), BOS)
    out = generate(model, prompt, 7, GREEDY, stop_at_eos=True)
    assert out.tolist() == [[BOS, 4, 5, EOS, PAD, PAD, PAD, PAD], [BOS, 4, 5, 6, 7, EOS, PAD, PAD]]
    assert model.step == 5  # stopped once every row had finished
    model = ScriptedModel(script)
    out = generate(model, prompt, 7, GREEDY, stop_at_eos=False)
    assert out[0].tolist() == [BOS, 4, 5, EOS, 6, 7, 8, 9] and model.step == 7


def test_cache_is_cleared_even_when_the_loop_fails():
    model = CachedMock(context_len=8)

    def boom(i, n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(model, torch.full((1, 1), BOS), 5, UNIFORM, progress=boom)
    assert model.cleared == 1


def test_argument_validation():
    model = UniformModel(context_len=8)
    with pytest.raises(ValueError, match="overflow='bogus'"):
        generate(model, torch.full((1, 1), BOS), 3, overflow="bogus")
    with pytest.raises(ValueError, match="slide_margin=8"):
        generate(model, torch.full((1, 1), BOS), 3, slide_margin=8)
    with pytest.raises(ValueError, match="prompt"):
        generate(model, torch.tensor([BOS]), 3)
    with pytest.raises(ValueError, match="prompt"):
        generate(model, torch.ones(1, 2), 3)
    out = generate(model, torch.full((2, 3), BOS), 0)
    assert torch.equal(out, torch.full((2, 3), BOS)) and model.fed == []


# --- real models ----------------------------------------------------------------------------------
def test_greedy_with_and_without_cache_is_identical():
    model = tiny_transformer(max_seq_len=64)
    prompt = torch.randint(3, 23, (2, 5), generator=torch.Generator().manual_seed(1))
    a = generate(model, prompt, 25, GREEDY, use_cache=True)
    b = generate(model, prompt, 25, GREEDY, use_cache=False)
    assert torch.equal(a, b)
    assert not model.has_cache  # freed after generation


@pytest.mark.parametrize("overflow", ["slide", "reset", "window"])
def test_greedy_cache_agrees_across_max_seq_len(overflow):
    model = tiny_transformer(max_seq_len=16)
    prompt = torch.randint(3, 23, (2, 20), generator=torch.Generator().manual_seed(2))  # longer than W
    a = generate(model, prompt, 30, GREEDY, use_cache=True, overflow=overflow)
    b = generate(model, prompt, 30, GREEDY, use_cache=False, overflow=overflow)
    assert torch.equal(a, b)


@torch.inference_mode()
@pytest.mark.parametrize("use_cache", [True, False])
def test_slide_keeps_recent_context_and_reset_loses_it(use_cache):
    model = tiny_transformer(max_seq_len=16)  # default margin 16 // 4: a slide keeps 12
    seq = torch.randint(3, 23, (2, 24), generator=torch.Generator().manual_seed(3))
    last = lambda ids: model(ids)[:, -1]  # noqa: E731  fresh full forward

    dec = NextTokenLogits(model, 2, use_cache=use_cache, overflow="slide")
    for n in range(1, 17):
        torch.testing.assert_close(dec.next_logits(seq[:, :n]), last(seq[:, :n]), atol=1e-4, rtol=0)
    assert dec.start == 0
    torch.testing.assert_close(dec.next_logits(seq[:, :17]), last(seq[:, 5:17]), atol=1e-4, rtol=0)
    assert dec.start == 5
    for n in range(18, 22):  # decoding continues on the kept tail
        torch.testing.assert_close(dec.next_logits(seq[:, :n]), last(seq[:, 5:n]), atol=1e-4, rtol=0)
    dec.close()

    dec = NextTokenLogits(model, 2, use_cache=use_cache, overflow="reset")
    dec.next_logits(seq[:, :16])
    torch.testing.assert_close(dec.next_logits(seq[:, :17]), last(seq[:, 16:17]), atol=1e-4, rtol=0)
    torch.testing.assert_close(dec.next_logits(seq[:, :18]), last(seq[:, 16:18]), atol=1e-4, rtol=0)
    dec.close()


def test_default_overflow_is_slide_with_cache_and_window_without():
    model = tiny_transformer(max_seq_len=16)
    assert NextTokenLogits(model, 1).overflow == "slide"
    model.clear_cache()
    assert NextTokenLogits(model, 1, use_cache=False).overflow == "window"
    assert NextTokenLogits(UniformModel(), 1).overflow == "window"


def test_lstm_generation_slides_its_context_window():
    torch.manual_seed(0)
    model = MelodyLSTM(vocab_size=19, hidden_sizes=[16, 16], input_mode="embedding", embedding_dim=8, context_len=6)
    prompt = torch.randint(3, 19, (2, 4), generator=torch.Generator().manual_seed(4))
    out = generate(model, prompt, 12, GREEDY)
    seq = prompt
    with torch.no_grad():
        model.eval()
        for _ in range(12):
            nxt = model(seq[:, -6:], last_only=True).argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq)


@pytest.mark.parametrize("use_cache", [True, False])
def test_bos_only_prompt(use_cache):
    for model in (tiny_transformer(), MelodyLSTM(vocab_size=23, hidden_sizes=[8], context_len=5)):
        out = generate(model, torch.full((3, 1), BOS), 20, SamplingConfig(), torch.Generator().manual_seed(0),
                       use_cache=use_cache)
        assert out.shape == (3, 21) and (out[:, 0] == BOS).all()
        assert ((out >= 0) & (out < 23)).all()
