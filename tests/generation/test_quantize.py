"""Weight-only int8 decoding (``musicgen.generation.quantize``, ``generate quantize=int8``)."""

import copy
import importlib.util
import json

import pytest
import torch
import torch.nn as nn
from helpers import REPO, gen_cfg
from torch.utils._python_dispatch import TorchDispatchMode

from musicgen.cli.generate import run_generation
from musicgen.errors import ConfigError
from musicgen.generation import NextTokenLogits, SamplingConfig, generate
from musicgen.generation.quantize import (
    KERNEL_MAX_ROWS,
    Int8Linear,
    apply_quantize,
    int8_weights,
    kernel_runs_on,
    quantize_int8,
)
from musicgen.models import MelodyLSTM, MusicTransformer

GREEDY = SamplingConfig(greedy=True)
needs_kernel = pytest.mark.skipif(not kernel_runs_on("cpu"), reason="_weight_int8pack_mm does not run on this CPU")


class AtenOps(TorchDispatchMode):
    """Records the names of the aten ops that run inside it."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


def tiny(**kw) -> MusicTransformer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=97, n_layers=2, n_heads=4, d_model=64, d_ff=96, max_seq_len=48, dropout=0.0)
    return MusicTransformer(**{**cfg, **kw}).eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


def test_int8_weights_are_symmetric_per_row_and_round_to_nearest():
    w = torch.randn(40, 24) * torch.logspace(-3, 1, 40)[:, None]  # rows of very different sizes
    q, s = int8_weights(w)
    assert q.dtype == torch.int8 and s.shape == (40,)
    assert int(q.abs().max()) == 127 and (q.abs().amax(dim=1) == 127).all()  # every row uses the full range
    assert torch.allclose(s, w.abs().amax(dim=1) / 127)
    err = (q.float() * s[:, None] - w).abs()
    assert (err <= s[:, None] / 2 + 1e-7).all()  # round to nearest: at most half a step per weight
    zero_q, _ = int8_weights(torch.zeros(3, 8))  # an all-zero row stays zero (no 0/0)
    assert (zero_q == 0).all()


def test_int8_linear_is_close_to_the_float_linear():
    torch.manual_seed(1)
    linear = nn.Linear(128, 96, bias=False)
    x = torch.randn(2, 5, 128)
    q = Int8Linear.from_linear(linear)
    y, ref = q(x), linear(x)
    assert y.shape == ref.shape == (2, 5, 96)
    assert torch.allclose(y, x @ q.dequantized().T, atol=1e-5)  # fp32: exactly the dequantized weights
    assert 1e-4 < rel_err(y, ref) < 2e-2  # int8 rounding: visible, but below 2%
    with pytest.raises(ValueError, match="bias"):
        Int8Linear.from_linear(nn.Linear(4, 4))


@needs_kernel
def test_the_kernel_runs_for_few_rows_in_bf16_and_agrees_with_dequantize_in_matmul():
    torch.manual_seed(2)
    linear = nn.Linear(64, 160, bias=False)
    q = Int8Linear.from_linear(linear, kernel_devices=("cpu",), compute_dtype=torch.bfloat16)
    for rows in (1, KERNEL_MAX_ROWS, KERNEL_MAX_ROWS + 1):
        x = torch.randn(rows, 64)
        with AtenOps() as ops:
            y = q(x)
        used = "aten::_weight_int8pack_mm" in ops.names
        assert used == (rows <= KERNEL_MAX_ROWS), (rows, ops.names)
        assert y.dtype == torch.float32  # bf16 matmul, output back in the activations' dtype
        assert rel_err(y, x @ q.dequantized().T) < 1e-2  # bf16 rounding only
        assert rel_err(y, linear(x)) < 2e-2


def test_quantized_transformer_logits_stay_close_and_the_embedding_exact():
    model = tiny()
    q = quantize_int8(copy.deepcopy(model))
    linears = [m for m in q.modules() if isinstance(m, nn.Linear)]
    assert linears == []  # every linear replaced, the head included
    assert sum(isinstance(m, Int8Linear) for m in q.modules()) == 4 * 2 + 1
    assert torch.equal(q.tok_emb.weight, model.tok_emb.weight)  # the lookup keeps the exact weights
    assert q.lm_head.weight.dtype == torch.int8 and q.lm_head.weight.data_ptr() != q.tok_emb.weight.data_ptr()
    x = torch.randint(3, 97, (2, 30))
    with torch.no_grad():
        ref, got = model(x), q(x)
    assert 1e-5 < rel_err(got, ref) < 3e-2
    p, r = got.log_softmax(-1), ref.log_softmax(-1)
    assert float((r.exp() * (r - p)).sum(-1).mean()) < 1e-3  # KL(float || int8) per position, nats
    kept = quantize_int8(copy.deepcopy(model), head=False)
    assert isinstance(kept.lm_head, nn.Linear) and kept.lm_head.weight is kept.tok_emb.weight  # still tied
    with pytest.raises(ValueError, match="already quantized"):
        quantize_int8(q)


def test_quantized_model_decodes_through_the_loop_with_the_kv_cache():
    q = quantize_int8(tiny())  # fp32 matmuls: dequantize-in-matmul at every size
    prompt = torch.tensor([[1, 5, 9, 11], [1, 7, 7, 3]])
    cached = generate(q, prompt, 60, GREEDY, use_cache=True)  # 64 > max_seq_len: slides once
    fresh = generate(q, prompt, 60, GREEDY, use_cache=False, overflow="slide")
    assert cached.shape == (2, 64)
    assert torch.equal(cached, fresh)  # the cache path gives the same tokens as full recomputation
    assert not q.has_cache  # the loop freed its cache
    sampled = generate(q, prompt, 20, SamplingConfig(), generator=torch.Generator().manual_seed(0))
    assert ((sampled >= 0) & (sampled < 97)).all()


@needs_kernel
def test_bf16_kernel_decoding_with_the_kv_cache_matches_full_forwards():
    # decoding steps (2 rows) take the kernel; the prefill (2 x 20 rows) dequantize-in-matmul, but for
    # the head, which sees the last position only (2 rows)
    model = tiny()
    q = quantize_int8(copy.deepcopy(model), compute_dtype=torch.bfloat16)
    seq = torch.randint(3, 97, (2, 40))
    decoder = NextTokenLogits(q, 2, use_cache=True)
    steps, kernel_calls = [], []
    with torch.no_grad():
        for n in range(20, 41):
            with AtenOps() as ops:
                steps.append(decoder.next_logits(seq[:, :n]))
            kernel_calls.append(ops.names.count("aten::_weight_int8pack_mm"))
        decoder.close()
        full = q(seq)  # (2, 40, V): dequantize-in-matmul throughout
        ref = model(seq)
    assert kernel_calls[0] == 1 and all(c == 4 * 2 + 1 for c in kernel_calls[1:])  # every linear, the head too
    got = torch.stack(steps, dim=1)  # (2, 21, V): logits for tokens 20..40
    assert rel_err(got, full[:, 19:]) < 2e-2  # kernel vs dequantize-in-matmul: bf16 rounding apart
    assert rel_err(got, ref[:, 19:]) < 4e-2  # and near the float model


def test_scales_are_stored_in_the_matmul_dtype_and_follow_the_model():
    assert quantize_int8(tiny(), compute_dtype=torch.bfloat16).layers[0].ffn.w2.scales.dtype == torch.bfloat16
    q = quantize_int8(tiny()).to(torch.bfloat16)
    lin = q.layers[0].attn.qkv
    assert lin.weight.dtype == torch.int8 and lin.scales.dtype == torch.bfloat16
    out = generate(q, torch.tensor([[1, 4]]), 8, GREEDY)
    assert out.shape == (1, 10)


def test_lstm_and_unknown_modes_are_refused_in_one_line():
    lstm = MelodyLSTM(vocab_size=50, embedding_dim=16, hidden_sizes=[32], dropout=0.0, context_len=16)
    with pytest.raises(ConfigError, match="Transformer") as e:
        quantize_int8(lstm)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="quantize='int4'") as e:
        apply_quantize(tiny(), "int4")
    assert "\n" not in str(e.value)
    model = tiny()
    assert apply_quantize(model, None) is model and isinstance(model.lm_head, nn.Linear)


@pytest.mark.slow
@needs_kernel
def test_quantized_model_decodes_under_torch_compile():
    q = quantize_int8(tiny(), compute_dtype=torch.bfloat16)  # an fp32 model with bf16 int8 matmuls: the kernel
    prompt = torch.tensor([[1, 5, 9]])
    eager = generate(q, prompt, 20, GREEDY)
    kept = copy.deepcopy(q)
    kept.setup_cache(1, kept.context_len)  # kept between calls, as a compiled decoder needs
    compiled = torch.compile(kept, dynamic=False)
    assert torch.equal(generate(compiled, prompt, 20, GREEDY), eager)


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_generate_quantize_int8_end_to_end(smoke_run, tmp_path, caplog):
    caplog.set_level("INFO", logger="musicgen.generation.quantize")
    report = run_generation(gen_cfg(smoke_run, tmp_path / "q", num_samples=2, max_new_tokens=24, quantize="int8"))
    assert report["settings"]["quantize"] == "int8"
    assert "int8 weight-only: 9 linears" in caplog.text  # the smoke model: 2 layers x 4 + the head
    written = json.loads((tmp_path / "q" / "generation.json").read_text())
    assert written["settings"]["quantize"] == "int8" and len(written["samples"]) == 2
    assert all(s["ids"] or s["ended_at_eos"] for s in written["samples"])
    plain = run_generation(gen_cfg(smoke_run, tmp_path / "p", num_samples=1, max_new_tokens=4))
    assert plain["settings"]["quantize"] is None
    with pytest.raises(ConfigError, match="quantize"):
        run_generation(gen_cfg(smoke_run, tmp_path / "bad", num_samples=1, max_new_tokens=4, quantize="int4"))


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_int8_check_script_measures_both_models(smoke_run, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("int8_check", REPO / "scripts" / "int8_check.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "check.json"
    report = script.main(["--run", str(smoke_run), "--tokens", "8", "--reps", "1", "--pieces", "4",
                          "--dtypes", "fp32", "--bootstrap", "50", "--split", "val", "--decode-pieces", "2",
                          "--out", str(out)])
    saved = json.loads(out.read_text())
    models = saved["nll"]["models"]
    base, int8 = models["fp32/base"]["nll_per_note"]["value"], models["fp32/int8"]["nll_per_note"]["value"]
    diff = models["fp32/int8_minus_base"]["nll_per_note"]
    assert diff["value"] == pytest.approx(int8 - base, abs=1e-9)  # the ratio of sums is additive
    assert abs(diff["value"]) < 0.05 and diff["low"] <= diff["value"] <= diff["high"]
    checked = saved["nll"]["decoding_path"]
    assert set(checked) >= {"fp32/base", "fp32/int8"} and checked["fp32/base"]["tokens"] > 0
    assert abs(checked["fp32/base"]["decoding_minus_full_forward"]) < 1e-4  # fp32: the same numbers both ways
    assert all(abs(v["decoding_minus_full_forward"]) < 0.02 for v in checked.values())
    speed = saved["speed"]["contenders"]
    assert set(speed) == {"fp32/base/eager", "fp32/int8/eager"} and speed["fp32/int8/eager"]["tokens_per_s"] > 0
    assert "| fp32 | int8 |" in report["table"] and "| fp32 | int8 |" in capsys.readouterr().out
