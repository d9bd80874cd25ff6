import pytest
import torch
import torch.nn.functional as F

from musicgen.models import MusicTransformer, TransformerConfig

TINY = dict(vocab_size=37, n_layers=2, n_heads=4, d_model=32, d_ff=64, max_seq_len=32, dropout=0.0)


def tiny(**overrides) -> MusicTransformer:
    torch.manual_seed(0)
    return MusicTransformer(**{**TINY, **overrides}).eval()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


def test_v7_v8_shape_has_34_1m_params_like_llama_with_tied_embeddings():
    cfg = TransformerConfig(vocab_size=1024)  # defaults: 8 layers, 8 heads, d 512, d_ff 2048
    V, d, f, L = cfg.vocab_size, cfg.d_model, cfg.d_ff, cfg.n_layers
    # LlamaForCausalLM(hidden 512, intermediate 2048, 8 layers, 8 heads, vocab 1024, tied):
    # embedding + per layer (q, k, v, o: 4d^2; gate, up, down: 3 d d_ff; two norms: 2d) + final norm
    expected = V * d + L * (4 * d * d + 3 * d * f + 2 * d) + d
    model = MusicTransformer(cfg)
    assert n_params(model) == expected == 34_087_424
    assert abs(n_params(model) - 34.1e6) / 34.1e6 < 0.01


def test_kwargs_and_config_build_the_same_model():
    a = MusicTransformer(**TINY)
    b = MusicTransformer(TransformerConfig(**TINY))
    assert a.config == b.config
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    with pytest.raises(TypeError):
        MusicTransformer(n_layer=2)  # misspelt field


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(d_model=100, n_heads=8), "d_model=100 is not divisible by n_heads=8"),
        (dict(d_model=24, n_heads=8), "must be even for RoPE"),
        (dict(n_layers=0), "n_layers=0 must be a positive integer"),
        (dict(vocab_size=10.5), "vocab_size=10.5 must be a positive integer"),
        (dict(dropout=1.0), "dropout=1.0 must be in"),
        (dict(rope_base=0), "rope_base=0 must be positive"),
    ],
)
def test_config_validation_names_field_and_value(fields, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**fields)


def test_tied_embeddings_and_scaled_residual_init():
    model = MusicTransformer(vocab_size=1024, n_layers=8, dropout=0.0)
    assert model.lm_head.weight is model.tok_emb.weight
    assert all(b.attn.qkv.bias is None and b.ffn.w13.bias is None for b in model.layers)
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 2e-3
    resid = model.layers[0].ffn.w2.weight.std().item()
    assert abs(resid - 0.02 / 4) < 1e-3  # 0.02 / sqrt(2 * n_layers)


def test_forward_shapes_last_only_and_backward():
    model = tiny()
    idx = torch.randint(0, 37, (3, 10))
    logits = model(idx)
    assert logits.shape == (3, 10, 37)
    torch.testing.assert_close(model(idx, last_only=True), logits[:, -1])
    model.train()
    loss = F.cross_entropy(model(idx[:, :-1]).reshape(-1, 37), idx[:, 1:].reshape(-1))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_causal_future_tokens_do_not_change_past_logits():
    model = tiny()
    idx = torch.randint(0, 37, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % 37
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_dropout_only_in_training():
    model = tiny(dropout=0.5)
    idx = torch.randint(0, 37, (2, 8))
    torch.testing.assert_close(model(idx), model(idx))
    model.train()
    assert not torch.allclose(model(idx), model(idx))


@torch.no_grad()
def test_kv_cache_prefill_then_decode_matches_full_forward():
    model = tiny()
    idx = torch.randint(0, 37, (2, 14))
    full = model(idx)  # (B, T, V)
    model.setup_cache(batch_size=2, max_len=32)
    # prefill a prompt of 5, a chunk of 3, then one token at a time
    out = [model(idx[:, :5], input_pos=torch.arange(5))]
    out.append(model(idx[:, 5:8], input_pos=torch.arange(5, 8)))
    for t in range(8, 14):
        out.append(model(idx[:, t : t + 1], input_pos=torch.tensor([t])))
    torch.testing.assert_close(torch.cat(out, dim=1), full, atol=1e-4, rtol=0)
    # last_only in cache mode, and a plain forward does not touch the cache
    k_before = model.layers[0].attn.kv_cache.k.clone()
    model(idx)
    torch.testing.assert_close(model.layers[0].attn.kv_cache.k, k_before)


@torch.no_grad()
def test_kv_cache_smaller_batch_reset_and_clear():
    model = tiny()
    idx = torch.randint(0, 37, (1, 6))
    model.setup_cache(batch_size=4)  # max_len defaults to max_seq_len
    assert model.layers[0].attn.kv_cache.k.shape == (4, 4, 32, 8)
    logits = model(idx, input_pos=torch.arange(6), last_only=True)
    torch.testing.assert_close(logits, model(idx)[:, -1], atol=1e-4, rtol=0)
    model.reset_cache()
    assert model.layers[0].attn.kv_cache.k.abs().sum() == 0
    model.clear_cache()
    assert not model.has_cache and model.layers[0].attn.kv_cache is None
    with pytest.raises(RuntimeError, match="setup_cache"):
        model(idx, input_pos=torch.arange(6))


@torch.no_grad()
def test_rope_cache_extends_for_longer_sequences():
    short = tiny(max_seq_len=8)
    long = tiny(max_seq_len=64)
    long.load_state_dict(short.state_dict())  # RoPE tables are not in the state dict
    idx = torch.randint(0, 37, (2, 20))
    assert short.rope.max_len == 8
    torch.testing.assert_close(short(idx), long(idx), atol=1e-5, rtol=0)
    assert short.rope.max_len >= 20
    # the cache path extends the tables too, up to the cache length
    short.setup_cache(batch_size=2, max_len=40)
    assert short.rope.max_len >= 40


@torch.no_grad()
def test_cache_under_autocast_stores_the_autocast_dtype():
    model = tiny()
    idx = torch.randint(0, 37, (2, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.setup_cache(batch_size=2)
        logits = model(idx, input_pos=torch.arange(6), last_only=True)
    assert model.layers[0].attn.kv_cache.k.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), model(idx)[:, -1], atol=0.1, rtol=0)


def test_num_params_counts_the_tied_matrix_once():
    model = tiny()
    V, d, f, L = TINY["vocab_size"], TINY["d_model"], TINY["d_ff"], TINY["n_layers"]
    assert model.num_params() == n_params(model) == V * d + L * (4 * d * d + 3 * d * f + 2 * d) + d
    # the head shares the embedding: counting every module's weights would add V * d again
    assert sum(p.numel() for m in model.modules() for p in m.parameters(recurse=False)) == model.num_params() + V * d
    assert model.num_params(non_embedding=True) == model.num_params() - V * d


def test_flops_per_token_is_6n_plus_attention_and_grows_with_context():
    model = tiny()
    N, L, d = n_params(model), TINY["n_layers"], TINY["d_model"]
    assert model.flops_per_token(16) == 6 * N + 12 * L * d * 16
    assert model.flops_per_token(32) - model.flops_per_token(16) == 12 * L * d * 16
    assert isinstance(model.flops_per_token(1), float)
