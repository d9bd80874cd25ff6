"""A trained run loaded back: the network, its tokeniser and the metadata stored with it
(``LoadedRun``), from a checkpoint written by ``musicgen train``."""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from musicgen.checkpoint.provenance import check_provenance, provenance, sha256_text
from musicgen.control.conditioning import ConditioningVocab
from musicgen.control.infilling import InfillVocab
from musicgen.data.cache import load as load_cache
from musicgen.errors import CheckpointError, ConfigError, ProvenanceError
from musicgen.tokenizers import MusicTokenizer, load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class RunMetadata:
    """What ``musicgen train`` stores in every checkpoint (``checkpoint["musicgen"]``), typed.

    ``model``: the network's config (``_target_`` and sizes, ``vocab_size`` included); ``config``:
    the whole resolved training config; ``provenance``: the hashes of tokeniser, split and config
    (``musicgen.checkpoint.provenance``); ``conditioning`` / ``infill``: the attribute vocabulary
    or the sentinels of a run trained with them (``musicgen.control``), else None; ``export``: what
    ``musicgen export`` added (an exported directory only)."""

    version: str
    model: dict[str, Any]
    objective: str
    seq_len: int
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None  # the tokeniser file's text, embedded
    tokenizer_file: str = "tokenizer.json"
    cache_path: str | None = None
    conditioning: dict[str, Any] | None = None
    infill: dict[str, Any] | None = None
    export: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunMetadata:
        """From a checkpoint's ``musicgen`` entry; a key this class does not know is a ``CheckpointError``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CheckpointError(f"unknown checkpoint metadata {unknown}: written by a newer musicgen?")
        missing = sorted(f.name for f in fields(cls) if f.name not in d and f.default is MISSING
                         and f.default_factory is MISSING)
        if missing:
            raise CheckpointError(f"checkpoint metadata lacks {missing}: not written by musicgen train")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """The stored form: None entries left out (a checkpoint without conditioning has no key)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @functools.cached_property
    def conditioning_vocab(self) -> ConditioningVocab | None:
        """The attribute vocabulary of a conditioned run, else None."""
        return ConditioningVocab.from_dict(self.conditioning) if self.conditioning else None

    @functools.cached_property
    def infill_vocab(self) -> InfillVocab | None:
        """The sentinel ids of a run trained with infilling, else None."""
        return InfillVocab.from_dict(self.infill) if self.infill else None


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

    @functools.cached_property
    def info(self) -> RunMetadata:
        """The metadata, typed (read once: the stored dictionary is not changed after loading)."""
        return RunMetadata.from_dict(self.metadata)

    @property
    def conditioning(self) -> ConditioningVocab | None:
        """The attribute vocabulary of a conditioned run, else None."""
        return self.info.conditioning_vocab

    @property
    def infill_vocab(self) -> InfillVocab | None:
        """The sentinel ids of a run trained with infilling, else None."""
        return self.info.infill_vocab

    def piece_attributes(self, split: Any, indices: Any) -> list[dict[str, str]]:
        """The attributes of documents ``indices`` of a split of this run's token cache, read from
        their source files as the DataModule read them (``musicgen.data.prefixed.piece_attributes``)."""
        from musicgen.data.prefixed import piece_attributes

        key_source = self.conditioning.key_source if self.conditioning is not None else "notes"
        return piece_attributes(self.metadata.get("config", {}).get("data", {}), [split.names[int(i)] for i in indices],
                                key_source)


# ----------------------------------------------------------------------------- provenance











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


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the network and tokeniser of a checkpoint written by ``musicgen.train``.

    The tokeniser is the one embedded in the checkpoint; a ``tokenizer.json`` beside it (in the
    run directory) must be the same file, and its vocabulary must be the model's. A Hugging Face
    directory written by ``musicgen.export`` is rebuilt from its safetensors and tokeniser files.
    """
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











