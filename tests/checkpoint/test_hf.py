"""musicgen.export: a trained V7 smoke run as a Hugging Face model directory, loaded by
transformers (same logits on real token windows) and by musicgen itself (generation), its
tokeniser files round-tripping; LSTM runs and existing directories refused."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import gen_cfg, run_cli

from musicgen.checkpoint import load_run
from musicgen.checkpoint.hf import export_hf, real_windows
from musicgen.cli.export import export
from musicgen.config import compose
from musicgen.constants import BOS_ID, EOS_ID, PAD_ID
from musicgen.errors import ConfigError
from musicgen.tokenizers import load_tokenizer

try:
    import transformers  # noqa: F401

    NO_TRANSFORMERS = None
except ImportError:
    NO_TRANSFORMERS = "transformers is not installed (pip install -e '.[test]' or '.[bench]')"

needs_transformers = pytest.mark.skipif(NO_TRANSFORMERS is not None, reason=NO_TRANSFORMERS or "")
LSTM_REFUSAL = "only the Transformer versions (V7, V8) export to Hugging Face format"


@pytest.fixture(scope="module")
def exported(smoke_run, tmp_path_factory):
    """The V7 smoke run exported once for this module (read-only)."""
    if NO_TRANSFORMERS:
        pytest.skip(NO_TRANSFORMERS)
    out = tmp_path_factory.mktemp("export") / "hf"
    assert export_hf(smoke_run, out) == out
    return out


@needs_transformers
def test_export_writes_a_hf_directory(exported, smoke_run):
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "musicgen.json",
            "README.md"} <= names
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temp dir left
    shape = load_run(smoke_run).net.config
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
            cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["max_position_embeddings"]) == (
        shape.vocab_size, shape.d_model, shape.d_ff, shape.n_layers, shape.n_heads, shape.n_heads, shape.max_seq_len)
    assert cfg["rms_norm_eps"] == shape.norm_eps and cfg["rope_theta"] == shape.rope_base
    assert cfg["tie_word_embeddings"] is True
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (BOS_ID, EOS_ID, PAD_ID)

    from safetensors.torch import load_file

    weights = load_file(str(exported / "model.safetensors"))
    assert "model.layers.0.self_attn.q_proj.weight" in weights and "model.layers.0.mlp.gate_proj.weight" in weights
    assert not any("qkv" in k or "w13" in k for k in weights)

    meta = json.loads((exported / "musicgen.json").read_text())
    assert meta["version"] == "v7" and meta["export"]["max_abs_logit_diff"] <= 1e-4
    card = (exported / "README.md").read_text()
    for needle in ("## Training data", "python -m musicgen.train +version=v7", "val_ppl",
                   "AutoModelForCausalLM.from_pretrained", f"python -m musicgen.generate ckpt_path={exported}"):
        assert needle in card, needle


@needs_transformers
def test_transformers_logits_match_ours(exported, smoke_run):
    from transformers import AutoModelForCausalLM

    run = load_run(smoke_run)
    ids, where = real_windows(run, n=4)
    assert "split" in where, where  # real tokens of the run's data, not the random fallback
    hf = AutoModelForCausalLM.from_pretrained(exported).float().eval()
    with torch.no_grad():
        ours = run.net.float().eval()(ids)
        theirs = hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        assert ours.shape == theirs.shape == (*ids.shape, run.net.config.vocab_size)
        diff = (ours - theirs).abs().max().item()
        assert diff <= 1e-4, diff
        # the check can fail even on a barely trained model: pairing the RoPE dims another way
        # (interleaved rather than rotate-half) moves the logits past the tolerance
        hs = run.net.config.head_dim
        for layer in hf.model.layers:
            q = layer.self_attn.q_proj.weight
            q.copy_(q.view(-1, hs // 2, 2, q.size(1)).transpose(1, 2).reshape_as(q))
        assert (ours - hf(input_ids=ids).logits).abs().max().item() > 1e-4


@needs_transformers
def test_tokenizer_files_round_trip(exported, smoke_run, folk_midi_files):
    run = load_run(smoke_run)
    rebuilt = load_tokenizer(exported / "tokenizer.json")
    assert rebuilt.vocab_size == run.tokenizer.vocab_size
    for midi in folk_midi_files[:2]:
        ids = run.tokenizer.encode(midi)
        assert len(ids) > 10 and rebuilt.encode(midi) == ids
    assert (exported / "tokenizer.json").read_text() == (smoke_run / "tokenizer.json").read_text()


@needs_transformers
def test_generate_loads_the_directory_without_transformers(exported, smoke_run, tmp_path, monkeypatch):
    original = load_run(smoke_run)
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails: not needed here
    run = load_run(exported)
    assert run.ckpt_path == exported and run.run_dir == exported
    ours, back = original.net.state_dict(), run.net.state_dict()
    assert ours.keys() == back.keys() and all(torch.equal(ours[k], back[k]) for k in ours)

    from musicgen.cli.generate import run_generation

    report = run_generation(gen_cfg(exported, tmp_path / "samples", ["num_samples=2", "max_new_tokens=24"]))
    assert len(report["samples"]) == 2 and report["ckpt_path"] == str(exported)
    assert all(s["ids"] for s in report["samples"])
    assert any((tmp_path / "samples" / s["midi"]).is_file() for s in report["samples"] if "midi" in s)


@pytest.mark.parametrize("smoke_run", ["v6"], indirect=True)
def test_lstm_run_is_refused(smoke_run, tmp_path):
    with pytest.raises(ConfigError, match=r"only the Transformer versions \(V7, V8\)"):
        export(compose("export", [f"ckpt_path={smoke_run}", f"out={tmp_path / 'hf'}"]))
    assert not (tmp_path / "hf").exists()
    proc = run_cli("musicgen.export", [f"ckpt_path={smoke_run}", f"out={tmp_path / 'hf'}"])
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and LSTM_REFUSAL in err[-1] and "Traceback" not in proc.stderr


def test_existing_directory_needs_overwrite(smoke_run, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not empty; pass overwrite=true"):
        export_hf(smoke_run, out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="format=onnx is not supported"):
        export(compose("export", [f"ckpt_path={smoke_run}", f"out={out}", "format=onnx"]))
    if NO_TRANSFORMERS:
        pytest.skip(f"the overwrite half: {NO_TRANSFORMERS}")
    export_hf(smoke_run, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # nothing left beside it
