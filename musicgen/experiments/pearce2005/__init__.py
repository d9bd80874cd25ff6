"""Published benchmarks: ``musicgen benchmark pearce2005`` (``make benchmark``).

Pearce (2005), pitch prediction in monophonic melodies (``../shared/benchmarks/pearce2005.md``):
the cross-entropy in bits per note of predicting each note's chromatic pitch from the earlier
notes of the same melody, by 10-fold cross-validation, on the Essen "kinder" collection and the
Bach chorale melodies BWV 253-438 (soprano lines), beside the thesis's published rows.

What runs here: the data extraction from music21's corpus (checked against the thesis's dataset
table), the folds, and four kinds of rows on the same folds:
- the thesis's own models reproduced (``musicgen.metrics.ppm``, PPM* C*I: Table 6.6's short-term,
  long-term, online long-term and combined models), each beside its published figure; every other
  row is compared with the reproduced combined model (and the fold-only rows with the long-term
  one) melody by melody, with a paired interval, where the reproduction is within tolerance;
- the project's smoothed n-gram (interpolated Kneser-Ney over pitches), its order chosen by
  cross-validation on the Essen "fink" collection;
- the project's LSTM and Transformer on pitch tokens, trained on the training folds only, each
  also with dynamic evaluation (learning from the test melody as it is predicted) and that
  combined with the thesis's short-term model (the networks' rows below), every
  network row over several training seeds;
- the same networks pre-trained on the rest of the exported corpus (``make data``), with every
  kinder, fink and BWV 253-438 melody and every duplicate of one removed, then scored as they are
  and fine-tuned per fold (``pretrained=false``: not run); beside them the thesis's long-term
  models given the same corpus (``ppm_pretrained``) and, for the Transformer, pre-training
  variants (``pretraining_variants``: a stricter interval-figure near-duplicate filter; no Bach
  chorale and no German Essen song), each paired with its main row;
- the Transformer on the chorales also given note features (``rhythm:``; durations, inter-onset
  intervals, bar positions, fermatas, optionally key and mode: ``rhythm``), of earlier
  notes only (strict) and also the current note's onset and duration (like-for-like, as IDyOM's
  linked viewpoints), still predicting pitch alone.
Every setting is chosen by cross-validation on fink, never on kinder or the chorales. The rows
compared with the thesis's figures are the contenders named in the config before the run (Holm's
correction over them); the others are exploratory. ``quick=true``: a smoke run on a few melodies.
Each finished fold and pre-training is kept under ``<output_dir>/pearce2005_runs/`` under a name
derived from its settings, so an interrupted benchmark resumes and a changed setting retrains.

Melodies are extracted once and kept in ``<data_dir>/benchmarks/pearce2005.json``. ``publish=true``
also writes the report into the docs site (``docs/results/pearce2005.md``, ``musicgen.publish``).

The modules, bottom to top (each imports only modules before it; lint-imports checks it):
``thesis`` (the published figures, the rows' labels), ``rhythm`` (note features, ``RhythmNet``),
``data`` (the melodies), ``store`` (finished work and the names it is kept under), ``corpus`` (the
pre-training corpus), ``networks`` (the networks, training, dynamic evaluation), ``protocol``
(folds, summaries, cross-validation, seeds, settings chosen on fink), ``ppm_models`` (the thesis's
models reproduced and pre-trained, the paired comparisons), ``rows`` (each network's rows),
``contenders`` and ``report``; here the entry (``pearce2005``, ``run``, ``main``), and every name
of those modules re-exported (``from musicgen.experiments import pearce2005 as bm; bm.fit``).
A test that replaces a function must replace it in the module that calls it (``protocol.fit``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from musicgen.errors import ConfigError
from musicgen.experiments.pearce2005.contenders import below_p_value, contender_rows, contender_tests, contenders_result
from musicgen.experiments.pearce2005.corpus import (
    DROPS,
    GERMAN_ESSEN,
    build_corpora,
    contour,
    corpus_files,
    duplicates_of,
    essen_tune_is_german,
    midi_melody,
    pretraining_corpora,
    pretraining_melodies,
)
from musicgen.experiments.pearce2005.data import (
    CHORALE_RANGE,
    ESSEN,
    chorale_melodies,
    chorale_parts,
    dataset_table,
    essen_melodies,
    essen_parts,
    load_features,
    load_melodies,
    melody_events,
)
from musicgen.experiments.pearce2005.networks import (
    LN2,
    MAX_LEN,
    N_SPECIAL,
    VOCAB,
    build_model,
    dynamic_log_dists,
    encode,
    fit,
    melody_bits,
    melody_log_probs,
    stm_dists,
    training_precision,
    true_log_probs,
    with_stm,
)
from musicgen.experiments.pearce2005.ppm_models import (
    PPM_PRETRAINED,
    CorpusPPM,
    paired_against_ppm,
    paired_pretrained,
    ppm_log_probs,
    ppm_pretrained_log_probs,
    ppm_pretrained_result,
    ppm_pretrained_rows,
    ppm_rows,
    reproduction,
)
from musicgen.experiments.pearce2005.protocol import (
    GROUPS,
    bits_per_note,
    choose_order,
    choose_settings,
    fink_score,
    fold_log_dists,
    folds,
    neural_cross_validation,
    ngram_cross_validation,
    ngram_name,
    pretrain,
    row_names,
    seeded_rows,
    set_path,
    summarise,
    summarise_seeds,
    tune,
)
from musicgen.experiments.pearce2005.report import (
    PPM_LABEL,
    contender_report,
    paired_report,
    ppm_report,
    pretraining_report,
    report_markdown,
)
from musicgen.experiments.pearce2005.rows import model_rows, neural_rows, rhythm_rows, variant_rows
from musicgen.experiments.pearce2005.store import Store, corpus_key, features_key, weights_key
from musicgen.experiments.pearce2005.thesis import (
    DYNAMIC,
    FOLD_ONLY,
    LEARNS,
    PPM_NAMES,
    PRETRAINING,
    PUBLISHED,
    SEES,
    STM,
    TABLE_6_6,
    THESIS_DATA,
    THESIS_SEES,
)
from musicgen.fs import atomic_write_text
from musicgen.metrics.statistics import seed_piece_interval
from musicgen.publish import git_commit, publish, results_dir
from musicgen.runtime import hydra_main, usable_cores

log = logging.getLogger(__name__)

#: The entry, then every public name of the modules below it, as the one module had them.
__all__ = ["with_quick", "pearce2005", "run", "write_report", "main", "THESIS_DATA", "PUBLISHED", "TABLE_6_6",
           "PPM_NAMES", "FOLD_ONLY", "PRETRAINING", "LEARNS", "SEES", "DYNAMIC", "STM", "THESIS_SEES", "ESSEN",
           "CHORALE_RANGE", "melody_events", "essen_melodies", "essen_parts", "chorale_melodies", "chorale_parts",
           "load_melodies", "load_features", "dataset_table", "Store", "weights_key", "corpus_key", "features_key",
           "midi_melody", "contour", "duplicates_of", "corpus_files", "pretraining_melodies", "GERMAN_ESSEN",
           "DROPS", "essen_tune_is_german", "pretraining_corpora", "build_corpora", "N_SPECIAL", "VOCAB", "encode",
           "build_model", "MAX_LEN", "fit", "melody_log_probs", "LN2", "dynamic_log_dists", "stm_dists", "with_stm",
           "true_log_probs", "melody_bits", "folds", "bits_per_note", "summarise", "ngram_cross_validation",
           "ngram_name", "choose_order", "neural_cross_validation", "pretrain", "tune", "fold_log_dists",
           "summarise_seeds", "row_names", "seeded_rows", "GROUPS", "set_path", "fink_score", "choose_settings",
           "ppm_log_probs", "ppm_rows", "CorpusPPM", "PPM_PRETRAINED", "ppm_pretrained_log_probs",
           "ppm_pretrained_rows", "reproduction", "paired_against_ppm", "ppm_pretrained_result",
           "paired_pretrained", "model_rows", "variant_rows", "rhythm_rows", "neural_rows", "below_p_value",
           "contender_tests", "contender_rows", "contenders_result", "contender_report", "PPM_LABEL",
           "report_markdown", "ppm_report", "paired_report", "pretraining_report", "seed_piece_interval",
           "training_precision"]


def with_quick(cfg: DictConfig) -> DictConfig:
    """``quick=true``: ``quick_overrides`` merged in (``models`` and ``tune.grid`` replaced, not
    merged): a smoke run."""
    if not cfg.get("quick"):
        return cfg
    quick = cfg.quick_overrides
    out = OmegaConf.merge(cfg, quick)
    if "models" in quick:
        out.models = quick.models
    if "grid" in quick.get("tune", {}):
        out.tune.grid = quick.tune.grid
    if "grid" in quick.get("rhythm", {}):
        out.rhythm.grid = quick.rhythm.grid
    return out


def pearce2005(cfg: DictConfig) -> dict[str, Any]:
    cfg = with_quick(cfg)
    data = load_melodies(Path(cfg.data_dir))
    if cfg.get("melodies"):
        data = {name: melodies[: int(cfg.melodies)] for name, melodies in data.items()}
    store = Store(Path(cfg.output_dir) / "pearce2005_runs")
    ppm = OmegaConf.to_container(cfg.ppm, resolve=True)
    if ppm["escape"] not in ("a", "b", "c", "x"):
        raise ConfigError(f"ppm.escape={ppm['escape']!r}: one of a, b, c, x")
    reproduced = {ds: ppm_rows(data[ds], ppm, store, ds, k=cfg.folds, seed=cfg.seed, n_boot=cfg.n_boot)
                  for ds in ("chorales", "kinder")}
    holds = reproduction(reproduced, ppm["tolerance"])
    for row, r in holds.items():
        log.info("PPM* %s: chorales %.3f (thesis %.3f), kinder %.3f (thesis %.3f)", PPM_NAMES[row],
                 r["chorales"]["ours"], r["chorales"]["thesis"], r["kinder"]["ours"], r["kinder"]["thesis"])
    order, tuning = choose_order(data["fink"], range(2, 9))
    rows = {name: ngram_cross_validation(data[name], order, k=cfg.folds, seed=cfg.seed, n_boot=cfg.n_boot)
            for name in ("chorales", "kinder")}
    result = {"datasets": dataset_table(data), "order": order, "order_scores_on_fink": tuning, "ngram": rows,
              "ppm": {"settings": ppm, "rows": reproduced, "reproduction": holds}}
    compared = {ngram_name(order): rows}
    pre = OmegaConf.to_container(cfg.ppm_pretrained, resolve=True)
    variants = OmegaConf.to_container(cfg.pretraining_variants, resolve=True)
    corpora = None
    if cfg.pretrained and (cfg.neural or pre["run"]):
        corpora = build_corpora(Path(cfg.data_dir), data, variants)
        result["pretraining_filters"] = {**corpora["filters"], "corpus": corpora["stats"]}
    if corpora and pre["run"]:
        result["ppm_pretrained"] = ppm_pretrained_result(data, corpora, variants, ppm, pre, store, cfg)
        compared.update({row: {ds: r[ds] for ds in ("chorales", "kinder")}
                         for row, r in result["ppm_pretrained"]["rows"].items()})
    if cfg.neural:
        plain = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
                 for key in cfg if key not in ("paths", "hydra", "quick_overrides")}
        rhythm = plain.get("rhythm") or {}
        features = None
        if rhythm.get("run"):
            features = load_features(Path(cfg.data_dir), data, list(dict.fromkeys([*rhythm["datasets"], "fink"])))
        result["neural"] = neural_rows(plain, data, store, features, corpora)
        compared.update({row: {ds: r[ds] for ds in ("chorales", "kinder") if ds in r}
                         for row, r in result["neural"]["rows"].items()})
    fold_only = {n for n in compared if n == ngram_name(order) or n.endswith(FOLD_ONLY)}
    result["paired"] = paired_against_ppm(compared, reproduced, holds, fold_only, n_boot=cfg.n_boot, seed=cfg.seed)
    if corpora:
        every = {**result.get("ppm_pretrained", {}).get("rows", {}), **result.get("neural", {}).get("rows", {})}
        result["paired_pretrained"] = paired_pretrained(every, n_boot=cfg.n_boot, seed=cfg.seed)
    result["contenders"] = contenders_result(OmegaConf.to_container(cfg.contenders, resolve=True),
                                             result.get("neural", {}).get("rows", {}), reproduced, holds)
    return result


@hydra_main("benchmark")
def run(cfg: DictConfig) -> None:
    if cfg.name != "pearce2005":
        raise ConfigError(f"benchmark {cfg.name!r} unknown; the benchmarks are: pearce2005")
    if cfg.publish:
        results_dir(cfg.publish_dir)  # a missing docs directory fails before the work
    store = Store(Path(cfg.output_dir) / "pearce2005_runs")
    store.begin(commit=git_commit(), quick=bool(cfg.get("quick")))
    result = pearce2005(cfg)
    result["wall_time"] = {**store.wall_time(), "cores": usable_cores()}
    write_report(cfg, result)


def write_report(cfg: DictConfig, result: dict[str, Any]) -> None:
    """``pearce2005.json`` and ``pearce2005.md`` in ``output_dir``, the report on stdout, and with
    ``publish=true`` the page ``docs/results/pearce2005.md``."""
    out = Path(cfg.output_dir)
    atomic_write_text(out / "pearce2005.json", json.dumps(result, indent=1))
    atomic_write_text(out / "pearce2005.md", report_markdown(result))
    print(report_markdown(result))
    if cfg.publish:
        log.info("published to %s", publish(cfg.name, report_markdown(result), docs_dir=cfg.publish_dir))


def main() -> None:
    """``musicgen benchmark pearce2005 [key=value ...]``: the first word names the benchmark."""
    sys.argv[1:] = [f"name={a}" if re.fullmatch(r"\w+", a) else a for a in sys.argv[1:]]
    run()
