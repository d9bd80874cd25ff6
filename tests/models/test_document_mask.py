"""The Transformer's opt-in options: ``document_mask`` (attention inside each BOS-delimited
document of a packed window, RoPE restarting at BOS) and ``qk_norm`` (RMSNorm on queries and
keys). Off, the model is the one it was (same parameters, same logits)."""

import pytest
import torch

from musicgen.constants import BOS_ID, EOS_ID
from musicgen.models import MusicTransformer, TransformerConfig

TINY = dict(vocab_size=37, n_layers=2, n_heads=4, d_model=32, d_ff=64, max_seq_len=64, dropout=0.0)


def tiny(**overrides) -> MusicTransformer:
    torch.manual_seed(0)
    return MusicTransformer(**{**TINY, **overrides}).eval()


def doc(n: int, g: torch.Generator, bos: bool = True, eos: bool = True) -> torch.Tensor:
    """A document as the packed stream holds it: BOS, n content ids, EOS."""
    body = torch.randint(EOS_ID + 2, TINY["vocab_size"], (n,), generator=g)
    parts = [torch.tensor([BOS_ID])] * bos + [body] + [torch.tensor([EOS_ID])] * eos
    return torch.cat(parts)


def packed_rows(g: torch.Generator) -> list[list[torch.Tensor]]:
    """Two windows of 40 tokens, as TokenWindows cuts them from the stream: the first starts at a
    BOS, the second in the middle of a document (its head is the tail of one, without BOS), and
    both end inside a document (no EOS)."""
    first = [doc(9, g), doc(14, g), doc(12, g, eos=False)]
    second = [doc(6, g, bos=False), doc(3, g), doc(20, g), doc(5, g, eos=False)]
    assert [sum(len(d) for d in row) for row in (first, second)] == [40, 40]
    return [first, second]


def test_options_are_off_by_default_and_change_nothing_when_off():
    assert TransformerConfig().document_mask is False and TransformerConfig().qk_norm is False
    plain = tiny()
    assert not any("q_norm" in n or "k_norm" in n for n, _ in plain.named_parameters())
    idx = torch.randint(0, 37, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(tiny(document_mask=False, qk_norm=False)(idx), plain(idx), atol=0, rtol=0)


@pytest.mark.parametrize("field", ["document_mask", "qk_norm"])
def test_options_must_be_booleans(field):
    with pytest.raises(ValueError, match=f"{field}=1 must be true or false"):
        TransformerConfig(**{field: 1})


@pytest.mark.parametrize("qk_norm", [False, True])
@torch.no_grad()
def test_packed_window_equals_each_document_alone(qk_norm):
    rows = packed_rows(torch.Generator().manual_seed(1))
    idx = torch.stack([torch.cat(row) for row in rows])  # (2, 40)
    model = tiny(document_mask=True, qk_norm=qk_norm)
    packed = model(idx)  # (2, 40, V)
    alone = torch.stack([torch.cat([model(d[None])[0] for d in row]) for row in rows])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    # without the mask the later documents see the earlier ones: the test can tell the difference
    model.config.document_mask = False
    assert (model(idx) - alone).abs().max() > 1e-2


@torch.no_grad()
def test_document_mask_changes_nothing_on_one_document():
    idx = doc(30, torch.Generator().manual_seed(2), eos=False)[None]
    masked, plain = tiny(document_mask=True), tiny()
    torch.testing.assert_close(masked(idx), plain(idx), atol=1e-5, rtol=0)


def test_document_mask_gradients_stay_inside_each_document():
    rows = packed_rows(torch.Generator().manual_seed(3))
    idx = torch.cat(rows[0])[None]  # documents at 0..10, 11..26, 27..39
    model = tiny(document_mask=True)
    emb = model.tok_emb(idx).detach().requires_grad_(True)
    model.tok_emb.forward = lambda _: emb  # differentiate a later position's logits by the inputs
    model(idx)[0, 20].sum().backward()
    touched = emb.grad[0].abs().sum(-1) > 0  # (T,)
    assert touched[11:21].all() and not touched[:11].any() and not touched[21:].any()


@pytest.mark.parametrize("options", [dict(qk_norm=True), dict(document_mask=True, qk_norm=True)])
@torch.no_grad()
def test_kv_cache_decoding_matches_the_training_forward(options):
    """Generation with the options on: a context is one document starting at BOS; prefill then
    token-by-token decoding gives the full forward's logits."""
    model = tiny(**options)
    idx = torch.stack([doc(20, torch.Generator().manual_seed(s), eos=False) for s in (4, 5)])  # (2, 21)
    full = model(idx)
    model.setup_cache(batch_size=2, max_len=32)
    out = [model(idx[:, :6], input_pos=torch.arange(6))]
    for t in range(6, idx.size(1)):
        out.append(model(idx[:, t : t + 1], input_pos=torch.tensor([t])))
    torch.testing.assert_close(torch.cat(out, dim=1), full, atol=1e-4, rtol=0)


def test_qk_norm_adds_one_weight_per_head_dimension_for_queries_and_keys():
    plain, normed = tiny(), tiny(qk_norm=True)
    extra = {n for n, _ in normed.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert extra == {f"layers.{i}.attn.{w}.weight" for i in range(2) for w in ("q_norm", "k_norm")}
    assert normed.layers[0].attn.q_norm.weight.shape == (TINY["d_model"] // TINY["n_heads"],)
    # the queries and keys reach attention with unit RMS (times the weight, 1 at init)
    x = torch.randn(1, 5, TINY["d_model"]) * 10
    attn = normed.layers[0].attn
    q = attn.q_norm(attn.qkv(x).view(1, 5, 3 * 4, 8)[:, :, :4])
    torch.testing.assert_close(q.square().mean(-1), torch.ones(1, 5, 4), atol=1e-4, rtol=0)
