import pytest
import torch
from omegaconf import OmegaConf

from musicgen.models import LSTMConfig, MelodyLSTM

MODES = [
    dict(input_mode="float"),
    dict(input_mode="embedding", embedding_dim=12),
    dict(input_mode="embedding", embedding_dim=12, attention_heads=2),
    dict(input_mode="float", attention_heads=4),
]


def tiny(**overrides) -> MelodyLSTM:
    torch.manual_seed(0)
    fields = dict(vocab_size=29, hidden_sizes=[8, 16, 8], dropout=0.0, context_len=10)
    return MelodyLSTM(**{**fields, **overrides}).eval()


@pytest.mark.parametrize("mode", MODES)
def test_shapes_and_last_only(mode):
    model = tiny(**mode)
    idx = torch.randint(0, 29, (3, 11))
    full = model(idx)
    assert full.shape == (3, 11, 29)
    last = model(idx, last_only=True)
    assert last.shape == (3, 29)
    torch.testing.assert_close(last, full[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_causal_output_at_t_ignores_later_inputs(mode):
    model = tiny(**mode)
    idx = torch.randint(0, 29, (2, 12))
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 7) % 29
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_float_mode_feeds_the_normalised_id():
    model = tiny(input_mode="float")
    assert model.embed is None and model.lstms[0].input_size == 1
    seen = {}

    def record(module, inputs):
        seen["x"] = inputs[0]

    model.lstms[0].register_forward_pre_hook(record)
    idx = torch.tensor([[0, 5, 28]])
    model(idx)
    torch.testing.assert_close(seen["x"], (idx.float() / 29).unsqueeze(-1))


def test_versions_shapes_and_param_count():
    # V6: embedding 128, [512, 512, 512], vocab 362
    model = MelodyLSTM(vocab_size=362, hidden_sizes=[512, 512, 512], input_mode="embedding", embedding_dim=128)
    lstm = lambda i, h: 4 * (i * h + h * h + 2 * h)  # noqa: E731  (PyTorch keeps two bias vectors)
    expected = 362 * 128 + lstm(128, 512) + 2 * lstm(512, 512) + 512 * 362 + 362
    assert sum(p.numel() for p in model.parameters()) == expected
    v1 = MelodyLSTM(vocab_size=59, hidden_sizes=[256, 512, 256], input_mode="float")
    assert [m.hidden_size for m in v1.lstms] == [256, 512, 256] and v1.config.n_layers == 3
    assert v1.context_len == 100


def test_hydra_list_and_config_object():
    cfg = LSTMConfig(hidden_sizes=OmegaConf.create([4, 6]))
    assert cfg.hidden_sizes == (4, 6)
    assert MelodyLSTM(cfg).config is cfg


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(input_mode="onehot"), "input_mode='onehot' must be one of"),
        (dict(hidden_sizes=[]), r"hidden_sizes=\[\] must be a non-empty list"),
        (dict(hidden_sizes=[8, 0]), r"hidden_sizes=\[8, 0\]"),
        (dict(hidden_sizes=[8, 10], attention_heads=4),
         "hidden_sizes\\[-1\\]=10 is not divisible by attention_heads=4"),
        (dict(attention_heads=-1), "attention_heads=-1"),
        (dict(context_len=0), "context_len=0 must be a positive integer"),
        (dict(dropout=-0.1), "dropout=-0.1 must be in"),
    ],
)
def test_config_validation_names_field_and_value(fields, message):
    with pytest.raises(ValueError, match=message):
        LSTMConfig(**fields)


@pytest.mark.parametrize("vocab", [629, 1279])
def test_float_input_keeps_every_id_distinct_under_bf16_autocast(vocab):
    """V1..V5 feed ``id / vocab``: in bf16 only a few hundred distinct values survive
    (1,279 ids keep 545 distinct bf16 values); under CPU autocast the LSTM runs in fp32, and runs."""
    model = MelodyLSTM(vocab_size=vocab, hidden_sizes=[8], input_mode="float", dropout=0.0)
    seen = {}
    model.lstms[0].register_forward_pre_hook(
        lambda m, args: seen.update(x=args[0].detach(), autocast=torch.is_autocast_enabled("cpu")))
    ids = torch.arange(vocab).view(1, -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
    assert seen["x"].dtype == torch.float32 and seen["autocast"] is False  # the recurrence runs in fp32
    assert seen["x"].unique().numel() == vocab
    assert torch.isfinite(logits.float()).all()
    assert (ids.float() / vocab).bfloat16().unique().numel() < vocab  # what bf16 would have kept
