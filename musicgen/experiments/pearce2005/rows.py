"""Each network's rows: its settings chosen on fink, then its rows on both datasets over the
training seeds (alone, with dynamic evaluation, and that combined with PPM*'s short-term model);
pre-trained on the corpus and fine-tuned per fold, pre-trained on each variant corpus, and given
note features (the rhythm rows); a row's folds side by side in worker processes (``neural_rows``)."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import numpy as np

from musicgen.errors import ConfigError
from musicgen.experiments.pearce2005.corpus import build_corpora
from musicgen.experiments.pearce2005.networks import training_precision
from musicgen.experiments.pearce2005.protocol import (
    choose_settings,
    fink_score,
    fold_workers,
    pretrain,
    row_names,
    seeded_rows,
    tune,
)
from musicgen.experiments.pearce2005.store import Store, features_key
from musicgen.experiments.pearce2005.thesis import LEARNS, SEES
from musicgen.runtime import usable_cores

log = logging.getLogger(__name__)


def model_rows(name: str, spec: dict, cfg: dict, data: dict[str, list[list[int]]], corpus: list[list[int]] | None,
               store: Store, features: dict[str, list[np.ndarray]] | None = None,
               variant_corpora: dict[str, list[list[int]]] | None = None) -> tuple[dict, dict]:
    """One network: settings chosen on fink (``tune.grid[name]``, recorded with the date in the
    store, so a resumed run reports the choice as it was made), then its rows on both datasets over
    ``seeds``; with a pre-training ``corpus``, the pre-trained rows too (fine-tuning's learning rate
    chosen on fink as before, ``tune.fine_grid``); for the network ``pretraining_variants.model``,
    the pre-trained and fine-tuned rows again per variant corpus of ``variant_corpora``
    (``variant_rows``); for the network ``rhythm.model``, its rhythm rows too (``rhythm_rows``,
    with each dataset's note ``features``)."""
    tune_cfg = cfg["tune"]  # not `tune`: that is the fine-tuning search below
    size = int(np.mean([len(data[n]) * (cfg["folds"] - 1) / cfg["folds"] for n in ("chorales", "kinder")]))
    start = {"model": spec, "training": cfg["fold_training"], "dynamic": cfg["dynamic"],
             "bias": cfg["combination"]["bias"]}
    grid = (tune_cfg.get("grid") or {}).get(name) or {}
    ppm = cfg["ppm"]

    def score(settings: dict, group: str) -> float:
        return fink_score(settings, group, data["fink"], store, f"tune-{name}", tune_cfg, cfg["seed"], size, ppm)

    def choose() -> dict:
        chosen, trace = choose_settings(start, grid, score)
        return {"chosen": chosen, "trace": trace, "date": datetime.date.today().isoformat()}

    record = store.record(f"tune-{name}-{store.key(start, grid, tune_cfg, size, cfg['seed'], ppm)}", choose)
    chosen = record["chosen"]
    tuning = {"fold_only": record}
    common = {"seeds": cfg["seeds"], "fold_seed": cfg["seed"], "k": cfg["folds"], "ppm": ppm, "n_boot": cfg["n_boot"]}
    out: dict[str, dict] = {}

    def add(rows_by_ds: dict[str, dict[str, dict]], sees: list[str], **extra) -> None:
        for ds, rows in rows_by_ds.items():
            for (row, r), seen in zip(rows.items(), sees):
                out.setdefault(row, {"sees": seen, **extra})[ds] = r

    add({ds: seeded_rows(row_names(name, "training folds"), data[ds], chosen["model"], chosen["training"], chosen,
                         store, f"{ds}-{name}", **common) for ds in ("chorales", "kinder")},
        [SEES["fold"], SEES["dynamic"], SEES["dynamic"]])
    if corpus is not None:
        weights = pretrain(name, chosen["model"], cfg["pretraining"], corpus, store, cfg["seed"])
        fine_train, fine_rows = tune(data["fink"], chosen["model"], cfg["fine_tuning"], tune_cfg["fine_grid"], store,
                                        f"tune-{name}-fine", cfg["seed"], size, init=weights)
        tuning["fine_tuning"] = {"chosen": fine_train, "grid": fine_rows}
        for label, train in (("pre-trained, not fine-tuned", {**fine_train, "steps": 0}),
                             ("pre-trained and fine-tuned per fold", fine_train)):
            add({ds: seeded_rows(row_names(name, label), data[ds], chosen["model"], train, chosen, store,
                                 f"{ds}-{name}", init=weights, **common) for ds in ("chorales", "kinder")},
                [SEES["pre"], SEES["pre_dynamic"], SEES["pre_dynamic"]], corpus="main", seed_values=list(cfg["seeds"]))
        variants = cfg.get("pretraining_variants") or {}
        if variant_corpora and variants.get("model") == name:
            out.update(variant_rows(name, chosen, fine_train, cfg, data, variant_corpora, store))
    rhythm = cfg.get("rhythm") or {}
    if rhythm.get("model") == name and rhythm.get("run"):
        tuning["rhythm"], rows = rhythm_rows(name, chosen, cfg, data, features or {}, store, size)
        out.update(rows)
    for row, r in out.items():
        log.info("%s: %s bits per note", row, ", ".join(f"{ds} {r[ds]['per_melody']:.3f}" for ds in
                                                        ("chorales", "kinder") if ds in r))
    return tuning, out


def variant_rows(name: str, chosen: dict, fine_train: dict, cfg: dict, data: dict[str, list[list[int]]],
                 corpora: dict[str, list[list[int]]], store: Store) -> dict[str, dict]:
    """The pre-training variants of one network (``pretraining_variants``): per variant corpus,
    the network at its settings ``chosen`` on fink pre-trained on that corpus (``pretraining``, as
    the main pre-training; stored under its own name), fine-tuned per fold with the fine-tuning
    settings chosen for the main pre-trained rows (``fine_train``: not chosen again), its three
    rows (``row_names``) over ``pretraining_variants.seeds`` (null: ``seeds``). Each row names its
    ``corpus`` and its ``base``, the same row pre-trained on the main corpus."""
    variants = cfg["pretraining_variants"]
    seeds = list(variants.get("seeds") or cfg["seeds"])
    common = {"seeds": seeds, "fold_seed": cfg["seed"], "k": cfg["folds"], "ppm": cfg["ppm"], "n_boot": cfg["n_boot"]}
    base = row_names(name, "pre-trained and fine-tuned per fold")
    out: dict[str, dict] = {}
    for vid, corpus in corpora.items():
        weights = pretrain(f"{name}-{vid}", chosen["model"], cfg["pretraining"], corpus, store, cfg["seed"])
        names = row_names(name, f"pre-trained ({variants['variants'][vid]['name']}) and fine-tuned per fold")
        for row, b, seen in zip(names, base, (SEES["pre"], SEES["pre_dynamic"], SEES["pre_dynamic"])):
            out[row] = {"sees": seen, "corpus": vid, "base": b, "seed_values": seeds}
        for ds in ("chorales", "kinder"):
            rows = seeded_rows(names, data[ds], chosen["model"], fine_train, chosen, store, f"{ds}-{name}",
                               init=weights, **common)
            for row, r in rows.items():
                out[row][ds] = r
    return out


def rhythm_rows(name: str, chosen: dict, cfg: dict, data: dict[str, list[list[int]]],
                features: dict[str, list[np.ndarray]], store: Store, size: int) -> tuple[dict, dict]:
    """The rhythm-aware rows of one network (``rhythm`` in the config; the features:
    ``musicgen.experiments.pearce2005.rhythm``): per variant, the network at the settings ``chosen``
    for it on fink with pitch alone, given the variant's features (``earlier``: of the notes before
    the one predicted; ``current``: of that note itself), ``rhythm.grid`` searched on fink with the
    same features (as ``tune.grid``, recorded with the date), then its three rows (``row_names``)
    on each of ``rhythm.datasets`` over ``seeds``; the variants named in ``rhythm.run``. A row that
    sees the key signature or the mode compares with the thesis's 1.911 (Table 9.8), the others with
    1.953 (Table 7.3)."""
    from musicgen.experiments.pearce2005.rhythm import sees, sees_key

    rhythm, tune, ppm = cfg["rhythm"], cfg["tune"], cfg["ppm"]
    grid = rhythm.get("grid") or {}
    common = {"seeds": cfg["seeds"], "fold_seed": cfg["seed"], "k": cfg["folds"], "ppm": ppm, "n_boot": cfg["n_boot"]}
    tuning, out = {}, {}
    tag = f"tune-{name}-rhythm"
    for variant in rhythm["run"]:
        if variant not in rhythm["variants"]:
            raise ConfigError(f"rhythm.run names {variant!r}: the variants are {', '.join(rhythm['variants'])}")
        v = rhythm["variants"][variant]
        seen_by = {"earlier": list(v.get("earlier", [])), "current": list(v.get("current", []))}
        spec = {**chosen["model"], "rhythm": seen_by}
        start = {**chosen, "model": spec}

        def score(settings: dict, group: str) -> float:
            return fink_score(settings, group, data["fink"], store, tag, tune, cfg["seed"], size, ppm,
                              features=features["fink"])

        def choose(start=start, score=score) -> dict:
            picked, trace = choose_settings(start, grid, score)
            return {"chosen": picked, "trace": trace, "date": datetime.date.today().isoformat()}

        key = store.key(start, grid, tune, size, cfg["seed"], ppm, features_key(features["fink"]))
        record = store.record(f"{tag}-{key}", choose)
        tuning[variant] = record
        settings = record["chosen"]
        seen = "; ".join(["training folds", *sees(spec["rhythm"]["earlier"], spec["rhythm"]["current"])])
        thesis = 1.911 if sees_key(spec["rhythm"]) else 1.953
        names = row_names(f"{name}, {v['name']}", "training folds")
        for ds in rhythm["datasets"]:
            rows = seeded_rows(names, data[ds], settings["model"], settings["training"], settings, store,
                               f"{ds}-{name}-rhythm", features=features[ds], **common)
            for row, see in zip(names, (seen, f"{seen}; {LEARNS}", f"{seen}; {LEARNS}")):
                out.setdefault(row, {"sees": see, "thesis": thesis})[ds] = rows[row]
    return tuning, out


def _networks(cfg: dict) -> list[str]:
    names = list(cfg.get("networks") or cfg["models"])
    unknown = [n for n in names if n not in cfg["models"]]
    if unknown:
        raise ConfigError(f"networks={names}: {unknown} not in models ({', '.join(cfg['models'])})")
    return names


def neural_rows(cfg: dict, data: dict[str, list[list[int]]], store: Store,
                features: dict[str, list[np.ndarray]] | None = None, corpora: dict | None = None) -> dict[str, Any]:
    """Every network's rows (``model_rows``), one network after the other, each row's folds trained
    side by side in ``workers`` processes (``fold_workers``). ``features``: the note features of the
    rhythm rows' datasets and fink; ``corpora``: the pre-training corpora of ``build_corpora``,
    built here when pre-training and not given."""
    precision = training_precision(cfg.get("precision", "fp32"))
    if precision != "fp32":  # in every training's settings, so in its stored name (fp32's names are as they were)
        cfg = {**cfg, **{k: {**cfg[k], "precision": precision}
                         for k in ("fold_training", "pretraining", "fine_tuning")}}
    corpus, corpus_stats, variant_corpora = None, None, None
    if cfg["pretrained"]:
        corpora = corpora or build_corpora(Path(cfg["data_dir"]), data, cfg.get("pretraining_variants") or {})
        corpus, corpus_stats, variant_corpora = corpora["main"], corpora["stats"], corpora["variants"]
    models = {name: cfg["models"][name] for name in _networks(cfg)}
    workers = max(1, int(cfg["workers"]))
    threads = max(1, usable_cores() // workers)
    if workers > 1:
        log.info("training folds side by side: %d processes, %d thread(s) each", workers, threads)
    with fold_workers(workers, threads):
        done = [model_rows(name, spec, cfg, data, corpus, store, features, variant_corpora)
                for name, spec in models.items()]
    out: dict[str, Any] = {"pretraining_corpus": corpus_stats, "tuning": {}, "rows": {}}
    for name, (tuning, rows) in zip(models, done):
        out["tuning"][name] = tuning
        out["rows"].update(rows)
    return out
