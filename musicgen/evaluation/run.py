"""Evaluation entry point: ``python -m musicgen.evaluate ckpt_path=<run dir or .ckpt>``.

Scores the test split by default (the validation split selected the checkpoint). Writes
``evaluation.json`` (rows ``model``, ``ngram``, ``real``: every figure with its 95% interval),
``evaluation.md``, PNG plots and ``evaluation_pieces.npz`` (the per-piece statistics behind every
figure, which the leaderboard pools over seeds; ``likelihood/names`` names each scored piece by
its source, so runs are paired by piece; with ``transpose=[...]`` the ``transposed/...`` block holds
each transposed copy's NLL, notes and name) into the run directory; ``pieces/<row>/NNN.mid``:
every piece each row scored (model samples, n-gram samples, real pieces), decoded as the figures
decoded it, with ``pieces/index.json`` mapping each file to its row and its place in the row's
per-piece statistics, so an outside tool can recompute any figure; and ``real/``: a few real
pieces of the split as MIDI, piano roll and audio (``real_examples``), to listen to beside the
samples. The scoring is ``musicgen.evaluation.scoring`` over ``musicgen.api.MusicModel``.

``publish=true`` also writes the report and its figures into the docs site (``musicgen.publish``):
``docs/results/evaluation-<version>-<run dir name>.md``, or ``<publish_name>.md`` (the demo's page:
``make demo EVALUATE_ARGS='publish=true publish_name=demo'``); ``publish_dir`` names another docs tree.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from musicgen.api import MusicModel
from musicgen.audio import AudioRenderer, renderer_from_config
from musicgen.checkpoint import load_run_cache
from musicgen.config import sampling_config
from musicgen.errors import ConfigError
from musicgen.evaluation.scoring import evaluate_run
from musicgen.fs import atomic_write_bytes, atomic_write_text
from musicgen.metrics.report import report_markdown
from musicgen.midi_io import write_score
from musicgen.plots import plot_evaluation, plot_piano_roll
from musicgen.publish import publish, results_dir, slug
from musicgen.runtime import pick_device

log = logging.getLogger(__name__)


def write_real_examples(tokenizer, cache, split_name: str, k: int, seed: int, out_dir: Path,
                        renderer: AudioRenderer | None) -> list[dict]:
    """``k`` untransposed pieces of the split ``split_name``, decoded from their tokens as the model sees them (the
    same decoding as a sample), written as ``real_NN.mid``, ``.png`` and audio under ``out_dir``."""
    split = cache.splits[split_name]
    originals = split.originals()
    chosen = sorted(np.random.default_rng(seed).choice(len(originals), size=min(k, len(originals)), replace=False))
    pieces = []
    for j, i in enumerate(originals[chosen]):
        score = tokenizer.decode(split.doc(i).tolist())
        stem = f"real_{j:02d}"
        write_score(score, out_dir / f"{stem}.mid")
        plot_piano_roll(score, out_dir / f"{stem}.png", title=f"real: {split.names[i]}")
        entry = {"index": j, "name": split.names[i], "midi": f"{stem}.mid", "png": f"{stem}.png",
                 "notes": int(sum(len(t.notes) for t in score.tracks))}
        if renderer is not None:
            entry["audio"] = renderer.write(score, out_dir / stem)
        pieces.append(entry)
    atomic_write_text(out_dir / "real.json", json.dumps({"split": split_name, "pieces": pieces}, indent=1))
    return pieces


def write_pieces(tokenizer, rows: dict[str, list], names: dict[str, list[str]], out_dir: Path) -> dict[str, Any]:
    """Every scored piece of each row (``rows``: row -> ids without BOS/EOS) as
    ``out_dir/<row>/NNN.mid`` (NNN: its index in the row, which is also its row in every
    ``<row>/...`` array of ``evaluation_pieces.npz``), decoded by ``tokenizer`` as the figures
    were, and ``out_dir/index.json``: file -> row, index (and the source name of a real piece),
    plus the pieces that could not be decoded or written, skipped with a warning. Stale
    ``NNN.mid`` files of an earlier evaluation into the same folder are removed first."""
    files: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, Any]] = []
    for row, pieces in rows.items():
        row_dir = out_dir / row
        row_dir.mkdir(parents=True, exist_ok=True)
        for old in row_dir.glob("[0-9][0-9][0-9].mid"):
            old.unlink()
        for k, ids in enumerate(pieces):
            name = f"{row}/{k:03d}.mid"
            try:
                write_score(tokenizer.decode([int(t) for t in ids]), out_dir / name)
            except Exception as e:  # a sample the tokeniser cannot decode is a finding, not a crash
                log.warning("evaluation piece %s not written: %s", name, e)
                skipped.append({"row": row, "index": k, "reason": f"{type(e).__name__}: {e}".splitlines()[0]})
                continue
            files[name] = {"row": row, "index": k, "npz_row": k,
                           **({"name": names[row][k]} if row in names else {})}
    index = {"note": "index: the piece's place in its row; npz_row: its row in evaluation_pieces.npz's <row>/<block>",
             "rows": {row: len(pieces) for row, pieces in rows.items()}, "files": files, "skipped": skipped}
    atomic_write_text(out_dir / "index.json", json.dumps(index, indent=1))
    return index


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    sampling = sampling_config(cfg.sampling)
    renderer = renderer_from_config(cfg.audio)  # a bad audio.soundfont fails before any work
    docs_dir = cfg.publish_dir or None
    if cfg.publish:
        results_dir(docs_dir, cfg.publish_name or None)  # and so does a missing docs directory or bad name
    device = pick_device(cfg.device)
    m = MusicModel.load(cfg.ckpt_path, device)
    out_dir = Path(cfg.output_dir) if cfg.output_dir else m.run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = load_run_cache(m.run)
    if cfg.split not in cache.splits or cache.splits[cfg.split].n_docs == 0:
        raise ConfigError(
            f"split={cfg.split} has no pieces in {cache.path}; use split=val, or train with data.test_frac > 0"
        )
    result = evaluate_run(m, cache, cfg, sampling)
    pieces = result.pop("_pieces")
    write_pieces(m.tokenizer, result.pop("_ids"), result.pop("_names"), out_dir / "pieces")
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"{row}/{k}": v for row, block in pieces.items() for k, v in block.items()})
    atomic_write_bytes(out_dir / "evaluation_pieces.npz", buf.getvalue())
    atomic_write_text(out_dir / "evaluation.json", json.dumps(result, indent=1))
    plot_evaluation(result, out_dir)
    atomic_write_text(out_dir / "evaluation.md", report_markdown(result))
    if cfg.real_examples:
        write_real_examples(m.tokenizer, cache, cfg.split, cfg.real_examples, cfg.seed, out_dir / "real", renderer)
    log.info("evaluation of the %s split written to %s", cfg.split, out_dir)
    if cfg.publish:
        name = cfg.publish_name or slug("evaluation", result["version"], m.run_dir.name)
        page = publish(name, report_markdown(result), [out_dir / "metrics.png", out_dir / "distributions.png"],
                       docs_dir=docs_dir)
        log.info("published to %s", page)
        result["published"] = str(page)
    result["output_dir"] = str(out_dir)
    return result
