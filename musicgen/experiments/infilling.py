"""Measuring infilling (``musicgen infilling <run>``): on the test pieces, the NLL per note of each
true middle given prefix and suffix against the same model given the prefix only. The feature
itself: ``musicgen.control.infilling``."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from musicgen.control.infilling import context_ids, with_attributes
from musicgen.errors import ConfigError, user_errors
from musicgen.tokenizers.bars import bar_starts

log = logging.getLogger(__name__)

















# ----------------------------------------------------------------------------- training windows





# ----------------------------------------------------------------------------- decoding a middle





















# ----------------------------------------------------------------------------- measurement

@torch.no_grad()
def _middle_nll(net: nn.Module, context: list[int], middle: list[int], base: int, device) -> float:
    """Summed NLL (nats) of ``middle`` after ``context``, over the tokeniser's ids (renormalised)."""
    x = torch.tensor([context + middle[:-1]], dtype=torch.long, device=device)
    logits = net(x, last_only=False)[0, len(context) - 1 :, :base].float()
    target = torch.tensor(middle, dtype=torch.long, device=device)
    return float(F.cross_entropy(logits, target, reduction="sum"))


def measure_infilling(ckpt_path: str, n_bars: int = 4, max_pieces: int = 200, device: str = "cpu",
                      seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """On the test pieces with at least ``n_bars`` + 2 bars: the NLL per note of the true middle
    (``n_bars`` bars from the piece's middle) given prefix and suffix, against given the prefix only
    (the same, cut, prefix), with 95% bootstrap intervals over pieces (of the ratio of sums)."""
    from musicgen.checkpoint import load_run, load_run_cache
    from musicgen.metrics.bootstrap import bootstrap_ci, ratio

    run = load_run(ckpt_path, map_location=device)
    vocab = run.infill
    if vocab is None:
        raise ConfigError(f"{ckpt_path} was trained without infilling (infill=bars)")
    tok, net = run.tokenizer, run.net.to(device).eval()
    is_bar = bar_starts(tok, vocab.base)
    test = load_run_cache(run).splits.get("test")
    if test is None or not len(test.originals()):
        raise ConfigError(f"{ckpt_path}: its data has no test pieces")
    window = run.trained_context
    cvocab, n_out, prefixes = run.conditioning, vocab.base, {}
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


@user_errors
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Infilling NLL of an infilling checkpoint (musicgen infilling)")
    p.add_argument("ckpt_path")
    p.add_argument("--bars", type=int, default=4, help="bars in each middle")
    p.add_argument("--pieces", type=int, default=200)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    a = p.parse_args(argv)
    text = json.dumps(measure_infilling(a.ckpt_path, a.bars, a.pieces), indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
