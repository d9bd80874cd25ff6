"""Export a trained Transformer run as a Hugging Face model directory, and load one back.

``python -m musicgen.export ckpt_path=<run dir or .ckpt> format=hf out=DIR`` (``make export``) writes

- ``config.json`` + ``generation_config.json``: a ``LlamaConfig`` of exactly the model's shape (the
  mapping of ``build_llama`` below), tied embeddings, our BOS/EOS/PAD ids, and the
  run's sampling settings as generation defaults;
- ``model.safetensors``: the weights under Llama's names, the fused ``qkv`` split into
  ``q_proj``/``k_proj``/``v_proj`` and ``w13`` into ``gate_proj``/``up_proj`` (the tied head is
  stored once, as ``model.embed_tokens.weight``, as ``save_pretrained`` does);
- ``tokenizer.json``: the run's tokeniser file byte for byte (MidiTok's own JSON plus a
  ``musicgen`` entry; its sha256 is the one the checkpoint's provenance records);
- ``musicgen.json``: the checkpoint's metadata (version, model, config, provenance, conditioning)
  and an ``export`` entry, so ``load_run(DIR)`` (``python -m musicgen.generate ckpt_path=DIR``)
  rebuilds our ``MusicTransformer`` from the safetensors without transformers installed;
- ``README.md``: a model card (data, version, metrics, the command that trained it, how to load it).

The directory is written beside ``out`` under a temporary name, checked (``AutoModelForCausalLM``
loaded from it must give our logits within ``tolerance`` on real token windows of the run's data,
and the load-back path must give them exactly), then renamed into place; a non-empty ``out`` is
replaced only with ``overwrite=true``. LSTM runs (V1-V6) have no Hugging Face counterpart and are
refused. Writing needs transformers (the ``bench`` extra); loading back needs only safetensors.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate

import musicgen
from musicgen.checkpoint.model_card import model_card
from musicgen.checkpoint.provenance import sha256_text
from musicgen.checkpoint.run import LoadedRun, load_checkpoint
from musicgen.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from musicgen.errors import CheckpointError, ConfigError, ProvenanceError
from musicgen.models.transformer import MusicTransformer
from musicgen.tokenizers import load_tokenizer

log = logging.getLogger(__name__)

#: The files that mark a directory as one this module wrote.
METADATA_FILE = "musicgen.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
FORMATS = ("hf",)
#: Files of the training run copied beside the model (where they exist): figures the card cites.
RUN_FILES = ("metrics.json", "evaluation.json", "evaluation.md", "metrics.png", "distributions.png")


# ----------------------------------------------------------------------------- weight names

def to_hf_state(state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Our ``MusicTransformer`` state dict -> ``LlamaForCausalLM`` names (without the tied
    ``lm_head.weight``): ``qkv`` = cat([q, k, v]) and ``w13`` = cat([gate, up]) split by rows."""
    out = {"model.embed_tokens.weight": state["tok_emb.weight"], "model.norm.weight": state["norm.weight"]}
    for i in range(n_layers):
        ours, hf = f"layers.{i}.", f"model.layers.{i}."
        q, k, v = state[ours + "attn.qkv.weight"].chunk(3, dim=0)  # (d, d) each
        gate, up = state[ours + "ffn.w13.weight"].chunk(2, dim=0)  # (d_ff, d) each
        out.update({
            hf + "input_layernorm.weight": state[ours + "attn_norm.weight"],
            hf + "self_attn.q_proj.weight": q,
            hf + "self_attn.k_proj.weight": k,
            hf + "self_attn.v_proj.weight": v,
            hf + "self_attn.o_proj.weight": state[ours + "attn.proj.weight"],
            hf + "post_attention_layernorm.weight": state[ours + "ffn_norm.weight"],
            hf + "mlp.gate_proj.weight": gate,
            hf + "mlp.up_proj.weight": up,
            hf + "mlp.down_proj.weight": state[ours + "ffn.w2.weight"],
        })
    return {k: v.detach().contiguous() for k, v in out.items()}


def from_hf_state(hf: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """The inverse of ``to_hf_state``: Llama names -> our state dict (the head tied to the embedding)."""
    emb = hf["model.embed_tokens.weight"]
    head = hf.get("lm_head.weight")
    if head is not None and not torch.equal(head, emb):
        raise CheckpointError("lm_head.weight differs from model.embed_tokens.weight: musicgen's model ties them")
    state = {"tok_emb.weight": emb, "lm_head.weight": emb, "norm.weight": hf["model.norm.weight"]}
    for i in range(n_layers):
        ours, p = f"layers.{i}.", f"model.layers.{i}."
        state.update({
            ours + "attn_norm.weight": hf[p + "input_layernorm.weight"],
            ours + "attn.qkv.weight": torch.cat([hf[p + f"self_attn.{x}_proj.weight"] for x in "qkv"]),
            ours + "attn.proj.weight": hf[p + "self_attn.o_proj.weight"],
            ours + "ffn_norm.weight": hf[p + "post_attention_layernorm.weight"],
            ours + "ffn.w13.weight": torch.cat([hf[p + "mlp.gate_proj.weight"], hf[p + "mlp.up_proj.weight"]]),
            ours + "ffn.w2.weight": hf[p + "mlp.down_proj.weight"],
        })
    return state


# ----------------------------------------------------------------------------- loading back

def is_export_dir(path: Path | str) -> bool:
    """Whether ``path`` is a directory written by ``export_hf``."""
    p = Path(path)
    return p.is_dir() and (p / METADATA_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def load_export(path: Path | str) -> LoadedRun:
    """Our ``MusicTransformer`` and tokeniser from an exported directory (safetensors only, no
    transformers); ``LoadedRun.ckpt_path`` and ``run_dir`` are the directory."""
    from safetensors.torch import load_file

    d = Path(path)
    meta = json.loads((d / METADATA_FILE).read_text(encoding="utf-8"))
    tok_path = d / meta.get("tokenizer_file", TOKENIZER_FILE)
    if not tok_path.is_file():
        raise CheckpointError(f"{d}: the tokeniser file {tok_path.name} is missing; export the run again")
    text = tok_path.read_text(encoding="utf-8")
    expected = meta.get("provenance", {}).get("tokenizer_sha256")
    if expected and sha256_text(text) != expected:
        raise ProvenanceError(f"{tok_path} is not the tokeniser this model was trained with "
                              f"(sha256 {sha256_text(text)[:12]}, expected {expected[:12]}); export the run again")
    tokenizer = load_tokenizer(tok_path)
    n_attr = len(meta.get("conditioning", {}).get("tokens", []))
    if tokenizer.vocab_size + n_attr != meta["model"]["vocab_size"]:
        raise ProvenanceError(f"{d}: the tokeniser has {tokenizer.vocab_size} tokens (+{n_attr} attribute tokens) "
                              f"but the model was built for {meta['model']['vocab_size']}")
    net = instantiate(meta["model"])
    net.load_state_dict(from_hf_state(load_file(str(d / WEIGHTS_FILE)), net.config.n_layers))
    net.eval()
    meta["tokenizer"] = text  # as in a checkpoint's metadata
    return LoadedRun(net, tokenizer, meta, d)


# ----------------------------------------------------------------------------- checking

def real_windows(run: LoadedRun, n: int = 4, length: int | None = None) -> tuple[torch.Tensor, str]:
    """``n`` windows of ``length`` (default: the trained window) real token ids from the run's
    token cache (its val split's packed stream, else train's), and where they came from; random
    ids after BOS when the cache is gone."""
    from musicgen.checkpoint.run import load_run_cache

    length = min(length or run.trained_context, run.net.config.max_seq_len)
    try:
        cache = load_run_cache(run)
    except (CheckpointError, ProvenanceError, OSError) as e:
        log.warning("no real token windows (%s): checking on random ids", e)
        cache = None
    for split in ("val", "train", "test"):
        if cache is None or split not in cache.splits:
            continue
        stream = np.asarray(cache.splits[split].tokens, dtype=np.int64)
        if len(stream) >= length:
            starts = np.linspace(0, len(stream) - length, num=n).astype(np.int64)
            rows = np.stack([stream[s : s + length] for s in starts])
            return torch.from_numpy(rows), f"{n} windows of {length} tokens of the {split} split"
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(UNK_ID + 1, run.net.config.vocab_size, (n, length), generator=g)
    rows[:, 0] = BOS_ID
    return rows, f"{n} windows of {length} random ids (the run's token cache was not found)"


@torch.no_grad()
def max_logit_diff(net: torch.nn.Module, hf_model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Largest absolute difference between our logits and the Hugging Face model's on ``ids``, fp32."""
    net, hf_model = net.float().eval(), hf_model.float().eval()
    ours = net(ids)
    theirs = hf_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return float((ours - theirs).abs().max())


# ----------------------------------------------------------------------------- writing

def _run_files(run: LoadedRun) -> Path | None:
    """The training run directory (metrics.json, evaluation.json, .hydra/), where it is known."""
    src = run.metadata.get("export", {}).get("run_dir")
    d = Path(src) if src else run.run_dir
    return d if d.is_dir() else None










def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file; name a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"out={out} exists and is not empty; pass overwrite=true to replace it, or another out=")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    old = None
    if out.is_dir():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.rmdir(old)
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_hf(ckpt_path: Path | str, out: Path | str | None = None, overwrite: bool = False, check: bool = True,
              tolerance: float = 1e-4) -> Path:
    """Write the run (or checkpoint) ``ckpt_path`` as a Hugging Face model directory ``out``
    (default ``<run dir>/hf``); returns ``out``. See the module docstring."""
    from musicgen.checkpoint.hf import llama_missing
    from musicgen.models import MusicTransformer

    if out is not None:
        _prepare_out(Path(out), overwrite)  # before loading anything
    run = load_checkpoint(ckpt_path, map_location="cpu")
    if not isinstance(run.net, MusicTransformer):
        raise ConfigError(f"{run.ckpt_path} is a {run.metadata.get('version', '?')} LSTM run: "
                          "only the Transformer versions (V7, V8) export to Hugging Face format")
    if getattr(run.net.config, "qk_norm", False):
        raise ConfigError(f"{run.ckpt_path} has model.qk_norm=true: Llama has no QK-norm, so it cannot export")
    if getattr(run.net.config, "bar_position", False):
        raise ConfigError(f"{run.ckpt_path} has model.bar_position=true: Llama has no bar/beat position "
                          "embeddings, so it cannot export")
    missing = llama_missing()
    if missing:
        raise ConfigError(f"format=hf needs transformers: {missing}; `make export` installs it")
    out = Path(out) if out is not None else run.run_dir / "hf"
    _prepare_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = run.net.float().eval()
    # the document mask only says how packed training windows attend; on one document (what
    # generation and scoring feed, and what Llama computes) the model is the same without it
    net.config.document_mask = False
    run_dir = _run_files(run)

    from transformers import AutoModelForCausalLM



    llama = build_llama(net)
    llama.config.rope_theta = net.config.rope_base  # also at the top level, where transformers 4.x reads it
    hf_state = to_hf_state(net.state_dict(), net.config.n_layers)
    llama.load_state_dict({**hf_state, "lm_head.weight": hf_state["model.embed_tokens.weight"]}, strict=True)
    sampling = run.metadata.get("config", {}).get("sampling", {})
    gen = llama.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = BOS_ID, EOS_ID, PAD_ID
    if not sampling.get("greedy", False) and sampling:
        gen.do_sample = True
        gen.temperature = sampling.get("temperature", 0.8)
        gen.top_k = sampling.get("top_k") or 0
        gen.top_p = sampling.get("top_p", 1.0)

    # the tokeniser load_run checked against the provenance hash: embedded, else the run's file
    text = run.metadata.get("tokenizer") or (
        run.run_dir / run.metadata.get("tokenizer_file", TOKENIZER_FILE)).read_text(encoding="utf-8")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        llama.save_pretrained(tmp, safe_serialization=True)
        if not (tmp / WEIGHTS_FILE).is_file():
            raise RuntimeError(f"save_pretrained wrote no {WEIGHTS_FILE} ({sorted(p.name for p in tmp.iterdir())})")
        (tmp / TOKENIZER_FILE).write_text(text, encoding="utf-8")
        export: dict[str, Any] = {
            "format": "hf",
            "source": str(run.ckpt_path),
            "run_dir": str(run_dir) if run_dir else None,
            "musicgen_version": musicgen.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tokenizer_sha256": sha256_text(text),
            "weights": "LlamaForCausalLM names; qkv -> q_proj|k_proj|v_proj, w13 -> gate_proj|up_proj, head tied",
        }
        ids, windows = real_windows(run)
        export["check_windows"] = windows
        if check:
            hf = AutoModelForCausalLM.from_pretrained(tmp)
            diff = max_logit_diff(net, hf, ids)
            if not diff <= tolerance:
                raise RuntimeError(f"exported model's logits differ from ours by {diff:.3g} (> {tolerance:g})")
            export["max_abs_logit_diff"] = diff
            del hf
        else:
            export["max_abs_logit_diff"] = None  # check=false: not measured
        meta = {k: v for k, v in run.metadata.items() if k not in ("tokenizer", "export")}
        if "document_mask" in meta.get("model", {}):
            meta["model"] = {**meta["model"], "document_mask": False}  # as checked above
        meta.update(tokenizer_file=TOKENIZER_FILE, export=export)
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if check:  # musicgen's own load-back path must rebuild exactly these weights
            with torch.no_grad():
                back = load_export(tmp).net(ids)
                if not torch.equal(back, net(ids)):
                    raise RuntimeError("the model rebuilt from the exported safetensors differs from the checkpoint's")
        copied = tuple(name for name in RUN_FILES if run_dir and (run_dir / name).is_file())
        for name in copied:
            shutil.copyfile(run_dir / name, tmp / name)
        (tmp / "README.md").write_text(model_card(run, str(out), run_dir, export, copied), encoding="utf-8")
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to %s (max |logit difference| %s on %s)", run.ckpt_path, out,
             export["max_abs_logit_diff"], windows)
    return out


def llama_missing() -> str | None:
    """Why the Llama rows cannot run (None: they can)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed (pip install -e '.[bench]')"
    return None

def build_llama(ours: MusicTransformer):
    """``LlamaForCausalLM`` of exactly our shape: dims, vocabulary, tied embeddings, no biases,
    RMSNorm eps, RoPE base, dropout, SDPA attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = ours.config
    kwargs = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.d_model, intermediate_size=shape.d_ff,
        num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads, num_key_value_heads=shape.n_heads,
        hidden_act="silu", max_position_embeddings=shape.max_seq_len, rms_norm_eps=shape.norm_eps,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False, attention_dropout=shape.dropout,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, attn_implementation="sdpa",
    )
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:  # transformers >= 5
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": shape.rope_base}
    else:
        kwargs["rope_theta"] = shape.rope_base
    model = LlamaForCausalLM(LlamaConfig(**kwargs))
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"Llama attention is {model.config._attn_implementation!r}, not sdpa")
    return model
