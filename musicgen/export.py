"""Export a trained Transformer run as a Hugging Face model directory, and load one back.

``python -m musicgen.export ckpt_path=<run dir or .ckpt> format=hf out=DIR`` (``make export``) writes

- ``config.json`` + ``generation_config.json``: a ``LlamaConfig`` of exactly the model's shape (the
  mapping of ``musicgen.bench.llama.build_llama``), tied embeddings, our BOS/EOS/PAD ids, and the
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

import json
import logging
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

import musicgen
from musicgen.checkpoint import LoadedRun, load_run, sha256_text
from musicgen.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from musicgen.errors import CheckpointError, ConfigError, ProvenanceError, user_errors
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
    from musicgen.checkpoint import load_run_cache

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


def _read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("ignoring %s: %s", path, e)
        return None


def train_command(run: LoadedRun, run_dir: Path | None) -> tuple[str, str]:
    """The command that trained the run, and where it comes from: the run's
    ``.hydra/overrides.yaml`` (a command-line run), else rebuilt from its config."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml" if run_dir else None
    if overrides_file is not None and overrides_file.is_file():
        import yaml

        overrides = yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or []
        overrides = [f"+{o}" if o.startswith("version=") else str(o) for o in overrides]
        return " ".join(["python -m musicgen.train", *overrides]), "the run's .hydra/overrides.yaml"
    cfg = run.metadata.get("config", {})
    parts = ["python -m musicgen.train", f"+version={run.metadata.get('version')}"]
    preset = (cfg.get("preset") or {}).get("name")
    if preset and preset != "none":
        parts.append(f"preset={preset}")
    return " ".join(parts), "rebuilt from the checkpoint's config (the run recorded no command line); " \
                            "the full resolved config is in musicgen.json"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def model_card(run: LoadedRun, out_name: str, run_dir: Path | None, export: dict[str, Any],
               copied: tuple[str, ...] = ()) -> str:
    """The README.md of an exported directory; ``copied``: the run's files copied beside it."""
    meta, shape = run.metadata, run.net.config
    cfg = meta.get("config", {})
    data, tok_cfg = cfg.get("data", {}), cfg.get("tokenizer", {})
    version = meta.get("version", "?")
    description = (cfg.get("version") or {}).get("description", "")
    split = meta.get("provenance", {}).get("split", {})
    command, command_src = train_command(run, run_dir)
    metrics = _read_json(run_dir / "metrics.json" if run_dir else None)
    evaluation = _read_json(run_dir / "evaluation.json" if run_dir else None)
    sampling = cfg.get("sampling", {})
    bpe = f"+BPE {tok_cfg['bpe_vocab_size']}" if tok_cfg.get("bpe_vocab_size") else ""
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [music, symbolic-music, midi, remi, musicgen, llama]", "---", ""]
    lines = [
        *front,
        f"# musicgen {version}: {description}".rstrip(": "),
        "",
        "An autoregressive model of symbolic music (MIDI as REMI tokens), trained with musicgen "
        f"{musicgen.__version__} and exported as a Hugging Face `LlamaForCausalLM` on {export['created'][:10]}. "
        f"Source checkpoint: `{export['source']}`.",
        "",
        "## Model",
        "",
        "| | |", "|---|---|",
        "| architecture | decoder-only Transformer: pre-norm RMSNorm, RoPE (rotate-half), SwiGLU, tied embeddings |",
        f"| layers / heads / d_model / d_ff | {shape.n_layers} / {shape.n_heads} / {shape.d_model} / {shape.d_ff} |",
        f"| vocabulary | {shape.vocab_size} |",
        f"| parameters | {run.net.num_params():,} |",
        f"| trained window | {meta.get('seq_len')} tokens (positions up to {shape.max_seq_len} at generation) |",
        f"| RMSNorm eps / RoPE base | {shape.norm_eps:g} / {shape.rope_base:g} |",
        f"| special ids | PAD {PAD_ID}, BOS {BOS_ID}, EOS {EOS_ID}, UNK {UNK_ID} |",
        "",
        "## Tokeniser",
        "",
        f"`tokenizer.json`: MidiTok's own file (REMI{bpe}, "
        f"{tok_cfg.get('num_velocities', '?')} velocities, chords {tok_cfg.get('use_chords')}, tempos "
        f"{tok_cfg.get('use_tempos')}, rests {tok_cfg.get('use_rests')}) with a `musicgen` entry; "
        f"{run.tokenizer.vocab_size} tokens. sha256 `{export['tokenizer_sha256'][:16]}...`.",
    ]
    if meta.get("conditioning", {}).get("tokens"):
        lines += ["", f"Conditioned on {', '.join(meta['conditioning'].get('attributes', []))}: "
                  f"{len(meta['conditioning']['tokens'])} attribute tokens after the tokeniser's ids "
                  "(see `musicgen.json`); musicgen inserts them after BOS."]
    lines += [
        "",
        "## Training data",
        "",
        f"{data.get('description', '')}".strip() or "(no description)",
        "",
        f"Corpora {data.get('corpora')}" + (f", root `{data['root']}`" if data.get("root") else "")
        + "; files per split (originals): " + ", ".join(f"{k} {len(v)}" for k, v in split.items())
        + f"; training files transposed up to {data.get('augment', {}).get('copies')} times within "
          f"±{data.get('augment', {}).get('max_shift')} semitones. The file lists are in `musicgen.json`.",
        "",
        "## Training",
        "",
        f"Command ({command_src}):",
        "",
        "```", command, "```",
        "",
        f"Objective {meta.get('objective')}; windows of {data.get('seq_len')} tokens, stride {data.get('stride')}; "
        f"optimiser {cfg.get('optim')}; precision {cfg.get('trainer', {}).get('precision')}.",
    ]
    if metrics:
        keys = [k for k in ("version", "epoch", "global_step", "train_loss", "val_loss", "val_ppl",
                            "best_val_loss", "best_val_ppl", "unigram_val_ppl", "n_params") if k in metrics]
        lines += ["", "Metrics (`metrics.json`):", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
                  "| " + " | ".join(_fmt(metrics[k]) for k in keys) + " |"]
    lines += ["", "## Evaluation", ""]
    if evaluation:
        try:
            from musicgen.report import report_markdown

            body = report_markdown(evaluation)
            for line in body.splitlines():
                image = re.fullmatch(r"!\[[^\]]*\]\(([^)]+)\)", line.strip())
                if image and image.group(1) not in copied:
                    continue  # a figure left in the run directory
                lines.append(line.replace("# ", "### ", 1) if line.startswith("#") else line)
        except (KeyError, TypeError, ValueError) as e:
            lines += [f"`evaluation.json` could not be summarised ({e}); it is not copied here."]
    else:
        lines += ["Not evaluated (no `evaluation.json` in the run directory; `python -m musicgen.evaluate`)."]
    lines += [
        "",
        "## How to load",
        "",
        "With transformers (the weights are a plain `LlamaForCausalLM`; " + (
            "the logits were not compared at export):" if export["max_abs_logit_diff"] is None else
            f"its logits and musicgen's differ by at most {export['max_abs_logit_diff']:.2g} in fp32 on "
            f"{export['check_windows']}, checked at export):"),
        "",
        "```python",
        "import torch",
        "from transformers import AutoModelForCausalLM",
        "from musicgen.tokenizers import load_tokenizer  # or miditok.REMI(params=f\"{path}/tokenizer.json\")",
        "",
        f'path = "{out_name}"',
        "model = AutoModelForCausalLM.from_pretrained(path).eval()",
        'tokenizer = load_tokenizer(f"{path}/tokenizer.json")',
        f"ids = model.generate(torch.tensor([[{BOS_ID}]]), do_sample=True, max_new_tokens=256)  "
        "# generation_config.json: the run's sampling",
        'tokenizer.decode(ids[0].tolist()).dump_midi("sample.mid")',
        "```",
        "",
        "With musicgen (our model rebuilt from `model.safetensors`, no transformers needed; grammar-constrained "
        f"sampling, temperature {sampling.get('temperature')}, top-k {sampling.get('top_k')}, "
        f"top-p {sampling.get('top_p')}, stops at EOS):",
        "",
        "```",
        f"python -m musicgen.generate ckpt_path={out_name} num_samples=4",
        "```",
        "",
        "## Files",
        "",
        "- `config.json`, `generation_config.json`, `model.safetensors`: the Hugging Face model",
        "- `tokenizer.json`: the MidiTok tokeniser the model was trained with",
        "- `musicgen.json`: musicgen's metadata (version, model, resolved config, provenance, export check)",
        *(f"- `{name}`: the training run's, as it was at export" for name in copied),
        "",
    ]
    return "\n".join(lines)


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
    from musicgen.bench.llama import llama_missing
    from musicgen.models import MusicTransformer

    if out is not None:
        _prepare_out(Path(out), overwrite)  # before loading anything
    run = load_run(ckpt_path, map_location="cpu")
    if not isinstance(run.net, MusicTransformer):
        raise ConfigError(f"{run.ckpt_path} is a {run.metadata.get('version', '?')} LSTM run: "
                          "only the Transformer versions (V7, V8) export to Hugging Face format")
    missing = llama_missing()
    if missing:
        raise ConfigError(f"format=hf needs transformers: {missing}; `make export` installs it")
    out = Path(out) if out is not None else run.run_dir / "hf"
    _prepare_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = run.net.float().eval()
    run_dir = _run_files(run)

    from transformers import AutoModelForCausalLM

    from musicgen.bench.llama import build_llama

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


def export(cfg: DictConfig) -> Path:
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not supported; choose one of {list(FORMATS)}")
    return export_hf(cfg.ckpt_path, cfg.out, overwrite=bool(cfg.overwrite), check=bool(cfg.check),
                     tolerance=float(cfg.tolerance))


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@user_errors
def main(cfg: DictConfig) -> None:
    out = export(cfg)
    print(f"exported: {out}")


if __name__ == "__main__":
    main()
