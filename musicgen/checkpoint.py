"""Checkpoints: loading a trained run back (the network, its tokeniser, the metadata stored with
it), the provenance that ties a checkpoint to its tokeniser, data split and config, and
continuing a run from one (which checkpoint, whether it fits, the run directory, the command).

Every checkpoint records ``provenance``: the sha256 of its tokeniser file, of its split (which
files are in train / val / test) and of the resolved config, plus the split's file lists. A
resume or a generation whose tokeniser or split differs is refused with a message naming what
differs (``ProvenanceError``), never silently trained or sampled on mismatched ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from musicgen.data.cache import is_transposed_copy
from musicgen.data.cache import load as load_cache
from musicgen.errors import CheckpointError, ConfigError, ProvenanceError
from musicgen.tokenizers import MusicTokenizer, load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    net: nn.Module
    tokenizer: MusicTokenizer
    metadata: dict[str, Any]
    ckpt_path: Path

    @property
    def run_dir(self) -> Path:
        # a checkpoint sits in <run>/checkpoints/; an exported model directory (musicgen.export) is its own
        return self.ckpt_path if self.ckpt_path.is_dir() else self.ckpt_path.parent.parent

    @property
    def trained_context(self) -> int:
        """The window the model trained on (``data.seq_len``, stored in the checkpoint): scoring
        and sampling stay within it unless a longer context is asked for."""
        return int(self.metadata["seq_len"])

    def context(self, requested: int | None) -> tuple[int, str]:
        """The context to score and sample with (``requested`` or the trained window), and how a
        report should label it."""
        trained = self.trained_context
        if not requested or requested == trained:
            return trained, f"{trained} tokens (the trained window)"
        if requested < 1:
            raise ConfigError(f"context_len={requested} must be >= 1 (null: the trained window, {trained})")
        return requested, f"{requested} tokens ({requested / trained:.2g}x the trained window of {trained})"

    @property
    def conditioning(self):
        """The attribute vocabulary of a conditioned run (``musicgen.conditioning.ConditioningVocab``), else None."""
        from musicgen.conditioning import ConditioningVocab

        d = self.metadata.get("conditioning")
        return ConditioningVocab.from_dict(d) if d else None

    @property
    def infill(self):
        """The sentinel ids of a run trained with infilling (``musicgen.infill.InfillVocab``), else None."""
        from musicgen.infill import InfillVocab

        d = self.metadata.get("infill")
        return InfillVocab.from_dict(d) if d else None


# ----------------------------------------------------------------------------- provenance

def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_files(cache_meta: dict[str, Any]) -> dict[str, list[str]]:
    """The files of each split of a token cache (originals only: transposed copies follow from
    the augmentation settings, which are part of the config)."""
    return {
        split: sorted(name for name in info["names"] if not is_transposed_copy(name))
        for split, info in sorted(cache_meta["splits"].items())
    }


def provenance(tokenizer_text: str, cache_meta: dict[str, Any], config_yaml: str) -> dict[str, Any]:
    files = split_files(cache_meta)
    return {
        "tokenizer_sha256": sha256_text(tokenizer_text),
        "split_sha256": sha256_text(json.dumps(files, sort_keys=True)),
        "config_sha256": sha256_text(config_yaml),
        "split": files,
    }


def check_provenance(saved: dict[str, Any], current: dict[str, Any], ckpt_path: Path | str, action: str) -> None:
    """Raise ``ProvenanceError`` if ``current`` has another tokeniser or split than ``saved``."""
    problems = []
    if saved.get("tokenizer_sha256") != current["tokenizer_sha256"]:
        problems.append(
            f"the tokeniser differs (sha256 {str(saved.get('tokenizer_sha256'))[:12]} in the checkpoint, "
            f"{current['tokenizer_sha256'][:12]} now): same tokenizer.* settings and training files are needed"
        )
    if saved.get("split_sha256") != current["split_sha256"]:
        problems.append(f"the data split differs: {describe_split_change(saved.get('split', {}), current['split'])}")
    if problems:
        raise ProvenanceError(f"cannot {action} {ckpt_path}: " + "; ".join(problems))


def describe_split_change(before: dict[str, list[str]], after: dict[str, list[str]]) -> str:
    """E.g. ``train: 2 files missing (folk/a.mid, ...), val: 1 file added (folk/b.mid)``."""
    parts = []
    for s in sorted(set(before) | set(after)):
        old, new = set(before.get(s, [])), set(after.get(s, []))
        for what, names in (("missing", old - new), ("added", new - old)):
            if names:
                shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
                parts.append(f"{s}: {len(names)} file{'s' if len(names) > 1 else ''} {what} ({shown})")
    return ", ".join(parts) or "same files, other order"


def read_metadata(ckpt_path: Path | str) -> dict[str, Any]:
    """A checkpoint's ``musicgen`` metadata, without reading its tensors into memory."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    meta = ckpt.get("musicgen")
    if not meta:
        raise CheckpointError(f"{ckpt_path} was not written by musicgen.train (no 'musicgen' metadata)")
    return meta


# ----------------------------------------------------------------------------- loading

def find_checkpoint(path: Path | str) -> Path:
    """A checkpoint file, or a run directory's ``checkpoints/best.ckpt`` (else ``last.ckpt``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (p / "checkpoints" / name).exists():
                return p / "checkpoints" / name
        raise CheckpointError(f"ckpt_path={path}: no checkpoints/best.ckpt or last.ckpt in this run directory")
    if not p.exists():
        raise CheckpointError(f"ckpt_path={path} does not exist; pass a .ckpt file or a run directory under outputs/")
    return p


def _tokenizer_text(meta: dict[str, Any], ckpt_path: Path) -> str:
    """The tokeniser the checkpoint was trained with: embedded in it, else its run's file."""
    if meta.get("tokenizer"):
        return meta["tokenizer"]
    tok_file = ckpt_path.parent.parent / meta.get("tokenizer_file", "tokenizer.json")
    if not tok_file.is_file():
        raise CheckpointError(
            f"{ckpt_path} holds no tokeniser and its tokeniser file {tok_file} is missing; "
            "copy the run's tokenizer.json there"
        )
    return tok_file.read_text(encoding="utf-8")


def load_run(path: Path | str, map_location: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the network and tokeniser of a checkpoint written by ``musicgen.train``.

    The tokeniser is the one embedded in the checkpoint; a ``tokenizer.json`` beside it (in the
    run directory) must be the same file, and its vocabulary must be the model's. A Hugging Face
    directory written by ``musicgen.export`` is rebuilt from its safetensors and tokeniser files.
    """
    from musicgen import export  # here: musicgen.export imports this module

    if export.is_export_dir(path):
        return export.load_export(path)
    ckpt_path = find_checkpoint(path)
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=False)
    meta = ckpt.get("musicgen")
    if not meta:
        raise CheckpointError(f"{ckpt_path} was not written by musicgen.train (no 'musicgen' metadata)")
    text = _tokenizer_text(meta, ckpt_path)
    beside = ckpt_path.parent.parent / meta.get("tokenizer_file", "tokenizer.json")
    candidates = {"embedded tokeniser": text}
    if beside.is_file():
        candidates[str(beside)] = beside.read_text(encoding="utf-8")
    expected = meta.get("provenance", {}).get("tokenizer_sha256")
    for what, candidate in candidates.items():
        if expected and sha256_text(candidate) != expected:
            raise ProvenanceError(
                f"{ckpt_path}: the {what} is not the one this model was trained with "
                f"(sha256 {sha256_text(candidate)[:12]}, expected {expected[:12]}); restore the run's tokenizer.json"
            )
    with tempfile.TemporaryDirectory() as d:
        tok_file = Path(d) / "tokenizer.json"
        tok_file.write_text(text, encoding="utf-8")
        tokenizer = load_tokenizer(tok_file)
    # attribute tokens, or infilling's sentinels, after the tokeniser's ids
    n_attr = len(meta.get("conditioning", {}).get("tokens", [])) + len(meta.get("infill", {}).get("tokens", []))
    if tokenizer.vocab_size + n_attr != meta["model"]["vocab_size"]:
        raise ProvenanceError(
            f"{ckpt_path}: the tokeniser has {tokenizer.vocab_size} tokens"
            + (f" (+{n_attr} attribute or sentinel tokens)" if n_attr else "") + " but the "
            f"model was built for {meta['model']['vocab_size']}; "
            "use the tokenizer.json of the run that wrote this checkpoint"
        )
    net = instantiate(meta["model"])
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    net.eval()
    return LoadedRun(net, tokenizer, meta, ckpt_path)


def load_run_cache(run: LoadedRun):
    """The token cache the run was trained on, refused if its tokeniser or split has changed since."""
    cache_path = Path(run.metadata.get("cache_path", ""))
    if not (cache_path / "meta.json").is_file():
        raise CheckpointError(f"the run's token cache {cache_path} is missing (rebuild it by training the same config)")
    cache = load_cache(cache_path)
    saved = run.metadata.get("provenance")
    if saved:
        current = provenance(cache.tokenizer_path.read_text(encoding="utf-8"), cache.meta, "")
        check_provenance(saved, current, run.ckpt_path, f"use the token cache {cache_path} with")
    return cache


# ----------------------------------------------------------------------------- resuming

class TrainingInterrupted(Exception):
    """SIGTERM or Ctrl-C stopped training after a checkpoint was written."""

    def __init__(self, signum: int, ckpt_path: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint {ckpt_path}")
        self.signum, self.ckpt_path = signum, ckpt_path


def resolve_ckpt_path(cfg) -> str | None:
    """The checkpoint to continue from: ``resume=true`` takes this run directory's ``last.ckpt``;
    ``ckpt_path`` may be a checkpoint file or a run directory (its ``checkpoints/last.ckpt``)."""
    if cfg.get("resume"):
        if cfg.get("ckpt_path") is not None:
            raise ConfigError("set either resume=true (continue this run directory) or ckpt_path=..., not both")
        p = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not p.is_file():
            raise ConfigError(
                f"resume=true: no checkpoint at {p}; name the run to continue with "
                "hydra.run.dir=outputs/train/<version>/<run>, or use ckpt_path=<run dir or .ckpt>"
            )
        return str(p)
    if cfg.get("ckpt_path") is None:
        return None
    p = Path(cfg.ckpt_path)
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no checkpoint at {p}")
    return str(p)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume(ckpt_path: str, metadata: dict[str, Any]) -> None:
    """Refuse to continue a checkpoint with another tokeniser, data split or model; list the
    other settings that changed (a longer schedule is fine; a different optimiser may not be)."""
    saved = read_metadata(ckpt_path)
    if not saved.get("provenance"):
        raise ProvenanceError(
            f"{ckpt_path} records no tokeniser or split hashes, so it cannot be checked against this data"
        )
    check_provenance(saved["provenance"], metadata["provenance"], ckpt_path, "resume from")
    before, after = _flatten(saved.get("config", {})), _flatten(metadata["config"])
    changed = sorted(k for k in before.keys() | after.keys()
                     if before.get(k) != after.get(k) and k.split(".")[0] not in ("paths", "resume", "ckpt_path"))
    model = [k for k in changed if k.startswith("model.")]
    if model:
        raise ConfigError(
            f"cannot resume from {ckpt_path}: the model differs ("
            + ", ".join(f"{k}={before.get(k)!r} there, {after.get(k)!r} now" for k in model)
            + "); pass the run's original overrides"
        )
    if changed:
        log.warning("resuming with settings that differ from the checkpoint's: %s",
                    ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed))


def tidy_run_dir(out_dir: Path) -> None:
    """Before a run starts in a directory that already has one (a resume; call on rank 0 only):
    keep the previous ``metrics.csv`` (the CSV logger would delete it) and drop temporary files of
    checkpoint writes a kill interrupted (never trusted, but as large as a checkpoint)."""
    for csv in out_dir.rglob("metrics.csv"):
        i = 1
        while csv.with_name(f"metrics.part{i}.csv").exists():
            i += 1
        csv.rename(csv.with_name(f"metrics.part{i}.csv"))
        log.info("kept the previous %s as %s", csv, csv.with_name(f"metrics.part{i}.csv").name)
    for tmp in (out_dir / "checkpoints").glob(".*.tmp"):
        log.info("removing %s, left by an interrupted checkpoint write", tmp)
        tmp.unlink()


def resume_command(overrides: list[str] | tuple[str, ...], run_dir: Path | str) -> str:
    """The command line that continues this run."""
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("resume", "ckpt_path", "hydra.run.dir")]
    return " ".join(["python -m musicgen.train", *keep, "resume=true", f"hydra.run.dir={run_dir}"])
