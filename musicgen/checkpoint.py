"""Loading a trained run back (the network, its tokeniser, the metadata stored with it), and the
provenance that ties a checkpoint to its tokeniser, data split and config.

Every checkpoint records ``provenance``: the sha256 of its tokeniser file, of its split (which
files are in train / val / test) and of the resolved config, plus the split's file lists. A
resume or a generation whose tokeniser or split differs is refused with a message naming what
differs (``ProvenanceError``), never silently trained or sampled on mismatched ids.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from musicgen.tokenizers import MusicTokenizer, load_tokenizer

#: suffix of a transposed copy's name in the cache (``folk/a.mid@+3``)
_COPY_SUFFIX = re.compile(r"@[+-]\d+$")


class ProvenanceError(ValueError):
    """A checkpoint used with a tokeniser or data split other than the ones it was trained with."""


@dataclass
class LoadedRun:
    net: nn.Module
    tokenizer: MusicTokenizer
    metadata: dict[str, Any]
    ckpt_path: Path

    @property
    def run_dir(self) -> Path:
        return self.ckpt_path.parent.parent


# ----------------------------------------------------------------------------- provenance

def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_files(cache_meta: dict[str, Any]) -> dict[str, list[str]]:
    """The files of each split of a token cache (originals only: transposed copies follow from
    the augmentation settings, which are part of the config)."""
    return {
        split: sorted(name for name in info["names"] if not _COPY_SUFFIX.search(name))
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
        raise ValueError(f"{ckpt_path} was not written by musicgen.train (no 'musicgen' metadata)")
    return meta


# ----------------------------------------------------------------------------- loading

def find_checkpoint(path: Path | str) -> Path:
    """A checkpoint file, or a run directory's ``checkpoints/best.ckpt`` (else ``last.ckpt``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (p / "checkpoints" / name).exists():
                return p / "checkpoints" / name
        raise FileNotFoundError(f"ckpt_path={path}: no checkpoints/best.ckpt or last.ckpt in this run directory")
    if not p.exists():
        raise FileNotFoundError(f"ckpt_path={path} does not exist; pass a .ckpt file or a run directory under outputs/")
    return p


def _tokenizer_text(meta: dict[str, Any], ckpt_path: Path) -> str:
    """The tokeniser the checkpoint was trained with: embedded in it, else its run's file."""
    if meta.get("tokenizer"):
        return meta["tokenizer"]
    tok_file = ckpt_path.parent.parent / meta.get("tokenizer_file", "tokenizer.json")
    if not tok_file.is_file():
        raise FileNotFoundError(
            f"{ckpt_path} holds no tokeniser and its tokeniser file {tok_file} is missing; "
            "copy the run's tokenizer.json there"
        )
    return tok_file.read_text(encoding="utf-8")


def load_run(path: Path | str, map_location: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the network and tokeniser of a checkpoint written by ``musicgen.train``.

    The tokeniser is the one embedded in the checkpoint; a ``tokenizer.json`` beside it (in the
    run directory) must be the same file, and its vocabulary must be the model's.
    """
    ckpt_path = find_checkpoint(path)
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=False)
    meta = ckpt.get("musicgen")
    if not meta:
        raise ValueError(f"{ckpt_path} was not written by musicgen.train (no 'musicgen' metadata)")
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
    if tokenizer.vocab_size != meta["model"]["vocab_size"]:
        raise ProvenanceError(
            f"{ckpt_path}: the tokeniser has {tokenizer.vocab_size} tokens but the model was built "
            f"for {meta['model']['vocab_size']}; use the tokenizer.json of the run that wrote this checkpoint"
        )
    net = instantiate(meta["model"])
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    net.eval()
    return LoadedRun(net, tokenizer, meta, ckpt_path)


def load_run_cache(run: LoadedRun):
    """The token cache the run was trained on, refused if its tokeniser or split has changed since."""
    from musicgen.data.cache import load as load_cache

    cache_path = Path(run.metadata.get("cache_path", ""))
    if not (cache_path / "meta.json").is_file():
        raise FileNotFoundError(f"the run's token cache {cache_path} is missing (rebuild it by training the same config)")
    cache = load_cache(cache_path)
    saved = run.metadata.get("provenance")
    if saved:
        current = provenance(cache.tokenizer_path.read_text(encoding="utf-8"), cache.meta, "")
        check_provenance(saved, current, run.ckpt_path, f"use the token cache {cache_path} with")
    return cache
