"""Published benchmarks: ``python -m musicgen.benchmark pearce2005`` (``make benchmark``).

Pearce (2005), pitch prediction in monophonic melodies (``../shared/benchmarks/pearce2005.md``):
the cross-entropy in bits per note of predicting each note's chromatic pitch from the earlier
notes of the same melody, by 10-fold cross-validation, on the Essen "kinder" collection and the
Bach chorale melodies BWV 253-438 (soprano lines), beside the thesis's published rows.

What runs here: the data extraction from music21's corpus (checked against the thesis's dataset
table), the folds, and the project's smoothed n-gram (interpolated Kneser-Ney over pitches), its
order chosen by cross-validation on the Essen "fink" collection, never on kinder or the chorales.
The neural rows of the benchmark (LSTM and Transformer on the folds, and pre-trained) are not
built yet.

Melodies are extracted once and kept in ``<data_dir>/benchmarks/pearce2005.json``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

import musicgen.config  # noqa: F401  (registers the resolvers paths/default.yaml uses)
from musicgen.constants import BOS_ID
from musicgen.errors import ConfigError, user_errors
from musicgen.fs import atomic_write_text
from musicgen.metrics import NgramLM
from musicgen.metrics.bootstrap import bootstrap_ci, mean_of

log = logging.getLogger(__name__)

N_SPECIAL = 4  # ids 0..3: PAD, BOS, EOS, UNK, as in every tokeniser
ESSEN = {"kinder": "essenFolksong/kinder0.abc", "fink": "essenFolksong/fink0.abc"}
CHORALE_RANGE = (253, 438)
#: Thesis Table 4.1: melodies, events (notes), distinct pitches.
THESIS_DATA = {"chorales": (185, 9227, 21), "kinder": (213, 8393, 27), "fink": (566, 33087, 37)}
#: Thesis Table 6.6 (and 7.3): bits per note, (chorales, kinder).
PUBLISHED = (
    ("short-term model only (learns online from the test melody)", 3.139, 2.693),
    ("long-term model (training folds only)", 2.444, 2.428),
    ("long-term model, also updated online with the test melody", 2.375, 2.237),
    ("long- and short-term combined (bias 2)", 2.347, 2.106),
    ("multiple-viewpoint system, features searched on this data (Table 7.3)", 1.953, None),
)


# ----------------------------------------------------------------------------- data


def melody_events(part) -> list[int]:
    """The chromatic pitches of a part's note events, in order: tied notes are one event, rests
    and grace notes are none, a chord counts as its highest note."""
    from music21 import chord, note

    events = []
    for n in part.flatten().stripTies().notes:
        if n.duration.isGrace or n.duration.quarterLength == 0:
            continue
        if isinstance(n, chord.Chord):
            events.append(max(p.midi for p in n.pitches))
        elif isinstance(n, note.Note):
            events.append(n.pitch.midi)
    return events


def essen_melodies(rel: str) -> list[list[int]]:
    from musicgen.data.export import music21_corpus_dir, parse_abc_tune, split_abc_tunes

    out = []
    for text in split_abc_tunes((music21_corpus_dir() / rel).read_text(encoding="utf-8")):
        score = parse_abc_tune(text)
        parts = [p for p in (list(score.parts) or [score]) if p.recurse().notes]
        if parts:
            out.append(melody_events(parts[0]))
    return out


def chorale_melodies() -> list[list[int]]:
    """Soprano lines of BWV 253-438, one per BWV number (MusicXML; the .krn duplicates are not read)."""
    from music21 import converter

    from musicgen.data.export import music21_corpus_dir

    out = {}
    for path in sorted((music21_corpus_dir() / "bach").iterdir()):
        m = re.fullmatch(r"bwv(\d+)\.(mxl|xml)", path.name)
        if m and CHORALE_RANGE[0] <= int(m.group(1)) <= CHORALE_RANGE[1] and m.group(1) not in out:
            out[m.group(1)] = melody_events(converter.parse(path, forceSource=True).parts[0])
    return list(out.values())


def load_melodies(data_dir: Path) -> dict[str, list[list[int]]]:
    path = data_dir / "benchmarks" / "pearce2005.json"
    if path.is_file():
        return json.loads(path.read_text())
    log.info("extracting the benchmark's melodies from music21's corpus (once; about two minutes)")
    data = {"chorales": chorale_melodies(), **{name: essen_melodies(rel) for name, rel in ESSEN.items()}}
    atomic_write_text(path, json.dumps(data))
    return data


def dataset_table(data: dict[str, list[list[int]]]) -> list[dict[str, Any]]:
    """Melodies, events and distinct pitches of each dataset against the thesis's Table 4.1."""
    rows = []
    for name, melodies in data.items():
        ours = (len(melodies), sum(map(len, melodies)), len({p for m in melodies for p in m}))
        theirs = THESIS_DATA[name]
        rows.append({"dataset": name, "ours": ours, "thesis": theirs,
                     "within_2_percent": [abs(a - b) <= 0.02 * b for a, b in zip(ours, theirs)]})
    return rows


# ----------------------------------------------------------------------------- protocol


def folds(n: int, k: int = 10, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint folds of ``range(n)`` drawn at random (every melody in exactly one)."""
    return [np.sort(f) for f in np.array_split(np.random.default_rng(seed).permutation(n), k)]


def bits_per_note(log_probs: list[np.ndarray]) -> dict[str, float]:
    """From each melody's natural-log probabilities of its notes: the mean over melodies of the
    per-melody cross-entropy (thesis Eq. 6.6, in bits) and the per-note mean over all notes."""
    per_melody = [-lp.sum() / math.log(2) / len(lp) for lp in log_probs if len(lp)]
    total = sum(-lp.sum() / math.log(2) for lp in log_probs)
    return {"per_melody": float(np.mean(per_melody)), "per_note": float(total / sum(len(lp) for lp in log_probs))}


def ngram_cross_validation(melodies: list[list[int]], order: int, k: int = 10, seed: int = 0,
                           n_boot: int = 1000) -> dict[str, Any]:
    """10-fold cross-validated bits per note of the smoothed n-gram over pitches: trained on the
    other folds, every note of each test melody predicted (the first from the start of the
    melody alone). The interval is over melodies."""
    alphabet = sorted({p for m in melodies for p in m})
    ids = {p: N_SPECIAL + i for i, p in enumerate(alphabet)}
    seqs = [np.array([BOS_ID, *(ids[p] for p in m)]) for m in melodies]
    log_probs: list[np.ndarray] = [np.zeros(0)] * len(seqs)
    for test in folds(len(seqs), k, seed):
        train = np.setdiff1d(np.arange(len(seqs)), test)
        lm = NgramLM(order=order, vocab_size=N_SPECIAL + len(alphabet)).fit([seqs[i] for i in train])
        for i in test:
            log_probs[i] = lm.log_probs(seqs[i])
    out = bits_per_note(log_probs)
    per_melody = np.array([-lp.sum() / math.log(2) / len(lp) for lp in log_probs if len(lp)])
    _, lo, hi = bootstrap_ci(per_melody, mean_of(0), n_boot=n_boot, seed=seed)
    out.update(per_melody_interval=[lo, hi], order=order, melodies=len(melodies))
    return out


def choose_order(melodies: list[list[int]], orders: range) -> tuple[int, dict[int, float]]:
    """The n-gram order with the lowest cross-validated bits per note (mean over melodies)."""
    scores = {o: ngram_cross_validation(melodies, o, n_boot=10)["per_melody"] for o in orders}
    return min(scores, key=scores.get), scores


def pearce2005(cfg: DictConfig) -> dict[str, Any]:
    data = load_melodies(Path(cfg.data_dir))
    order, tuning = choose_order(data["fink"], range(2, 9))
    rows = {name: ngram_cross_validation(data[name], order, seed=cfg.seed) for name in ("chorales", "kinder")}
    return {"datasets": dataset_table(data), "order": order, "order_scores_on_fink": tuning, "ngram": rows}


def report_markdown(result: dict[str, Any]) -> str:
    lines = ["# Pearce (2005): pitch prediction in monophonic melodies", "",
             "| dataset | melodies | events | distinct pitches | thesis (Table 4.1) | within 2% |",
             "|---|---|---|---|---|---|"]
    for d in result["datasets"]:
        lines.append(f"| {d['dataset']} | {d['ours'][0]} | {d['ours'][1]} | {d['ours'][2]} | "
                     f"{' / '.join(map(str, d['thesis']))} | {'yes' if all(d['within_2_percent']) else 'NO'} |")
    ch, ki = result["ngram"]["chorales"], result["ngram"]["kinder"]

    def cell(r):
        lo, hi = r["per_melody_interval"]
        return f"{r['per_melody']:.3f} [{lo:.3f}, {hi:.3f}] (per note {r['per_note']:.3f})"

    lines += ["", "Bits per note, 10-fold cross-validation, pitch alone; ours: the mean over melodies of the "
              "per-melody cross-entropy (thesis Eq. 6.6) with a 95% bootstrap interval over melodies.", "",
              "| model | chorales (BWV 253-438) | kinder |", "|---|---|---|",
              f"| musicgen {result['order']}-gram, interpolated Kneser-Ney (order chosen on fink) | {cell(ch)} | "
              f"{cell(ki)} |"]
    lines += [f"| thesis: {name} | {c:.3f} | {'-' if k is None else f'{k:.3f}'} |" for name, c, k in PUBLISHED]
    lines.append("")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
@user_errors
def hydra_main(cfg: DictConfig) -> None:
    if cfg.name != "pearce2005":
        raise ConfigError(f"benchmark {cfg.name!r} unknown; the benchmarks are: pearce2005")
    result = pearce2005(cfg)
    out = Path(cfg.output_dir)
    atomic_write_text(out / "pearce2005.json", json.dumps(result, indent=1))
    atomic_write_text(out / "pearce2005.md", report_markdown(result))
    print(report_markdown(result))


def main() -> None:
    """``python -m musicgen.benchmark pearce2005 [key=value ...]``: the first word names the benchmark."""
    sys.argv[1:] = [a if "=" in a or a.startswith("-") else f"name={a}" for a in sys.argv[1:]]
    hydra_main()


if __name__ == "__main__":
    main()
