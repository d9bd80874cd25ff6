"""Measuring infilling (``musicgen infilling ckpt_path=<run>``, conf/infilling.yaml): on the test
pieces, the NLL per note of each true middle given prefix and suffix against the same model given
the prefix only. The feature itself: ``musicgen.control.infilling``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig

from musicgen.api import MusicModel
from musicgen.checkpoint import load_run_cache
from musicgen.control.infilling import context_ids, with_attributes
from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_text
from musicgen.metrics.bootstrap import bootstrap_ci, ratio
from musicgen.runtime import hydra_main, pick_device
from musicgen.tokenizers.bars import bar_starts


@torch.no_grad()
def _middle_nll(net: nn.Module, context: list[int], middle: list[int], base: int, device) -> float:
    """Summed NLL (nats) of ``middle`` after ``context``, over the tokeniser's ids (renormalised)."""
    x = torch.tensor([context + middle[:-1]], dtype=torch.long, device=device)
    logits = net(x, last_only=False)[0, len(context) - 1 :, :base].float()
    target = torch.tensor(middle, dtype=torch.long, device=device)
    return float(F.cross_entropy(logits, target, reduction="sum"))


def measure_infilling(model: str | Path | MusicModel, n_bars: int = 4, max_pieces: int = 200,
                      device: str = "cpu", seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """On the test pieces of ``model`` (a run directory, a ``.ckpt`` or an exported directory,
    loaded on ``device``; or a ``MusicModel``) with at least ``n_bars`` + 2 bars: the NLL per note
    of the true middle (``n_bars`` bars from the piece's middle) given prefix and suffix, against
    given the prefix only (the same, cut, prefix), with 95% bootstrap intervals over pieces (of the
    ratio of sums)."""
    m = model if isinstance(model, MusicModel) else MusicModel.load(model, device)
    run, vocab, ckpt_path = m.run, m.infill_vocab, m.ckpt_path
    if vocab is None:
        raise ConfigError(f"{ckpt_path} was trained without infilling (infill=bars)")
    tok, net, device = m.tokenizer, m.net.eval(), m.device
    is_bar = bar_starts(tok, vocab.base)
    test = load_run_cache(run).splits.get("test")
    if test is None or not len(test.originals()):
        raise ConfigError(f"{ckpt_path}: its data has no test pieces")
    window = m.trained_context
    cvocab, n_out, prefixes = m.conditioning, vocab.base, {}
    if cvocab is not None:  # each piece with its own attributes, as validation scores it
        n_out = cvocab.base
        prefixes = {int(i): cvocab.prefix(a) for i, a in zip(test.originals(),
                                                              run.piece_attributes(test, test.originals()))}
        window -= len(cvocab.attributes)
    rows = []
    for i in test.originals():
        ids = [int(t) for t in test.doc(i)[1:-1]]
        starts = np.flatnonzero(is_bar[np.asarray(ids)])
        if len(starts) < n_bars + 2:
            continue
        a = (len(starts) - n_bars) // 2
        hi = int(starts[a + n_bars]) if a + n_bars < len(starts) else len(ids)
        context, before, middle = context_ids(ids, starts, (a, a + n_bars), vocab, window + 1 - (hi - int(starts[a])))
        if len(middle) < 2 or len(context) + len(middle) > window:
            continue
        notes = sum(len(t.notes) for t in tok.decode(middle).tracks)
        if not notes:
            continue
        if prefixes:
            context, before = with_attributes(context, prefixes[int(i)], lead=1), with_attributes(before,
                                                                                                   prefixes[int(i)])
        rows.append((_middle_nll(net, context, middle, n_out, device),
                     _middle_nll(net, before, middle, n_out, device), notes))
        if len(rows) >= max_pieces:
            break
    if not rows:
        raise ConfigError(f"{ckpt_path}: no test piece has {n_bars + 2} bars within the trained window")
    both, prefix, notes = (np.array(c, dtype=float) for c in zip(*rows))
    stats = np.stack([both, prefix, both - prefix, notes], axis=1)

    def per_note(col: int) -> dict[str, Any]:
        value, lo, hi = bootstrap_ci(stats, ratio(col, 3), n_boot=n_boot, seed=seed)
        return {"value": round(value, 4), "ci95": [round(lo, 4), round(hi, 4)]}

    return {"ckpt_path": str(run.ckpt_path), "pieces": len(rows), "bars": n_bars, "notes": int(notes.sum()),
            "nll_per_note_prefix_and_suffix": per_note(0), "nll_per_note_prefix_only": per_note(1),
            "difference": per_note(2)}


def summary_line(result: Mapping[str, Any]) -> str:
    """The three NLLs per note with their intervals, and what they were measured on."""
    def show(key: str) -> str:
        r = result[key]
        return f"{r['value']:.3f} {r['ci95']}"

    return (f"NLL per note of {result['bars']}-bar middles: given prefix and suffix "
            f"{show('nll_per_note_prefix_and_suffix')}, prefix only {show('nll_per_note_prefix_only')}, "
            f"difference {show('difference')} (test pieces: {result['pieces']}, notes: {result['notes']})")


def run(cfg: DictConfig) -> dict[str, Any]:
    """The measurement conf/infilling.yaml describes, written as JSON to ``cfg.out`` (null: the run
    directory's ``infilling.json``); the result, with ``out`` (where it went) added."""
    m = MusicModel.load(cfg.ckpt_path, pick_device(cfg.device))
    result = measure_infilling(m, cfg.bars, cfg.pieces, seed=cfg.seed, n_boot=cfg.n_boot)
    out = Path(cfg.out) if cfg.out else m.run_dir / "infilling.json"
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return {**result, "out": str(out)}


@hydra_main("infilling")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print(summary_line(result))
    print(f"written to {result['out']}")


if __name__ == "__main__":
    main()
