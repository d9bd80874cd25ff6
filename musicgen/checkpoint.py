"""Loading a trained run back: the network, its tokeniser and the metadata stored with it."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from musicgen.tokenizers import MusicTokenizer, load_tokenizer


@dataclass
class LoadedRun:
    net: nn.Module
    tokenizer: MusicTokenizer
    metadata: dict[str, Any]
    ckpt_path: Path

    @property
    def run_dir(self) -> Path:
        return self.ckpt_path.parent.parent


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


def load_run(path: Path | str, map_location: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the network and tokeniser of a checkpoint written by ``musicgen.train``."""
    ckpt_path = find_checkpoint(path)
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=False)
    meta = ckpt.get("musicgen")
    if not meta:
        raise ValueError(f"{ckpt_path} was not written by musicgen.train (no 'musicgen' metadata)")
    net = instantiate(meta["model"])
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    net.eval()
    with tempfile.TemporaryDirectory() as d:
        tok_file = Path(d) / "tokenizer.json"
        tok_file.write_text(meta["tokenizer"])
        tokenizer = load_tokenizer(tok_file)
    if tokenizer.vocab_size != meta["model"]["vocab_size"]:
        raise ValueError(
            f"{ckpt_path}: the tokeniser has {tokenizer.vocab_size} tokens but the model was built "
            f"for {meta['model']['vocab_size']}"
        )
    return LoadedRun(net, tokenizer, meta, ckpt_path)
