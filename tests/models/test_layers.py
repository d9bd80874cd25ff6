import inspect

import pytest
import torch
import torch.nn.functional as F

from musicgen.models.layers import Linear, RMSNorm, RotaryEmbedding, SwiGLU, apply_rope, build_config
from musicgen.models.transformer import TransformerConfig


def test_rmsnorm_matches_formula():
    torch.manual_seed(0)
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(3, 5, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_rope_rotates_pairs_and_position_zero_is_identity():
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=8, max_len=16)
    x = torch.randn(2, 3, 16, 8)  # (B, nh, T, hs)
    y = apply_rope(x, rope.cos, rope.sin)
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])
    # a rotation of each (i, i + hs/2) pair keeps its length
    pair_norm = lambda t: t[..., :4] ** 2 + t[..., 4:] ** 2  # noqa: E731
    torch.testing.assert_close(pair_norm(y), pair_norm(x))
    assert y.is_contiguous()


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=8, max_len=32)
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        qm = apply_rope(q.expand(1, 1, 32, 8), rope.cos, rope.sin)[0, 0, m]
        kn = apply_rope(k.expand(1, 1, 32, 8), rope.cos, rope.sin)[0, 0, n]
        return (qm * kn).sum()

    torch.testing.assert_close(score(5, 2), score(20, 17))
    torch.testing.assert_close(score(3, 3), score(30, 30))


def test_rope_extend_keeps_old_values_and_stays_a_plain_buffer():
    rope = RotaryEmbedding(head_dim=8, max_len=4)
    old_cos = rope.cos.clone()
    with torch.inference_mode():  # e.g. sampling between training epochs
        rope.extend(10)
    assert rope.max_len >= 10
    assert not rope.cos.is_inference()  # usable by a later backward
    torch.testing.assert_close(rope.cos[:4], old_cos)
    assert "cos" in dict(rope.named_buffers()) and rope.state_dict() == {}
    fresh = RotaryEmbedding(head_dim=8, max_len=rope.max_len)
    torch.testing.assert_close(rope.cos, fresh.cos)
    torch.testing.assert_close(rope.sin, fresh.sin)


def test_swiglu_is_w2_silu_w1_times_w3_without_biases():
    torch.manual_seed(0)
    ffn = SwiGLU(6, 10)
    assert ffn.w13.bias is None and ffn.w2.bias is None
    w1, w3 = ffn.w13.weight[:10], ffn.w13.weight[10:]
    x = torch.randn(2, 3, 6)
    expected = (F.silu(x @ w1.T) * (x @ w3.T)) @ ffn.w2.weight.T
    torch.testing.assert_close(ffn(x), expected)


def test_build_config_accepts_one_of_config_or_kwargs():
    cfg = TransformerConfig(n_layers=2)
    assert build_config(TransformerConfig, cfg, {}) is cfg
    assert build_config(TransformerConfig, None, {"n_layers": 3}).n_layers == 3
    with pytest.raises(TypeError, match="either config or field kwargs"):
        build_config(TransformerConfig, cfg, {"n_layers": 3})
    with pytest.raises(TypeError):
        build_config(TransformerConfig, None, {"n_layer": 3})  # misspelt key fails loudly


def test_model_signatures_list_the_config_fields():
    from musicgen.models import LSTMConfig, MelodyLSTM, MusicTransformer

    for model_cls, config_cls in ((MusicTransformer, TransformerConfig), (MelodyLSTM, LSTMConfig)):
        params = inspect.signature(model_cls).parameters
        fields = [f for f in config_cls.__dataclass_fields__]
        assert list(params) == ["config", *fields]
        for name in fields:
            assert params[name].default == getattr(config_cls(), name)


def traced_ops(module, x) -> set[str]:
    """The call targets dynamo traces for ``module(x)`` (run by the eager backend, no inductor)."""
    seen: set[str] = set()

    def backend(gm, example_inputs):
        seen.update(str(getattr(n.target, "__name__", n.target)) for n in gm.graph.nodes
                    if n.op in ("call_function", "call_method"))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(module, backend=backend, dynamic=False)(x)
    return seen


@pytest.mark.parametrize("bias", [False, True])
def test_linear_one_row_under_compile_is_a_multiply_and_sum_with_the_same_numbers(bias):
    torch.manual_seed(0)
    layer = Linear(64, 48, bias=bias).to(torch.bfloat16)
    one, eight = torch.randn(1, 1, 64, dtype=torch.bfloat16), torch.randn(8, 1, 64, dtype=torch.bfloat16)
    assert "linear" in traced_ops(layer, eight) and "sum" not in traced_ops(layer, eight)  # a GEMM still
    ops = traced_ops(layer, one)
    assert "sum" in ops and "linear" not in ops  # the GEMV form
    # eager: F.linear itself
    torch.testing.assert_close(layer(eight), F.linear(eight, layer.weight, layer.bias), rtol=0, atol=0)
    # compiled by inductor (one fused loop), it is the fp32-accumulated product rounded once to bf16
    ref = F.linear(one.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float())
    torch._dynamo.reset()
    got = torch.compile(layer, dynamic=False)(one)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, rtol=2**-8, atol=1e-5)
    # autocast keeps F.linear (the GEMV form would read fp32 weights)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "linear" in traced_ops(Linear(64, 48), one.float())
