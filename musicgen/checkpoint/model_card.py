"""The model card (``README.md``) of an exported Hugging Face directory: data, version, metrics,
the evaluation report, the command that trained it and how to load it."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import musicgen
from musicgen.checkpoint.run import LoadedRun
from musicgen.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID

log = logging.getLogger(__name__)


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
            from musicgen.metrics.report import report_markdown

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
