"""The networks' rows of the Pearce (2005) benchmark (``musicgen.experiments.pearce2005``): short-term
learning, settings chosen on fink, seeds, and the pre-registered contenders.

- Dynamic evaluation (``dynamic_log_dists``): while a test melody is scored, after each note is
  predicted the network takes ``steps`` plain SGD steps (step size ``lr``, gradients clipped at 1)
  on the cross-entropy of the notes predicted so far, that note included; the distribution of
  note ``t`` is read before any step has seen note ``t``. The network is copied per melody, so
  every melody starts from the weights training left (the thesis's STM is emptied per melody too).
- The combination with the thesis's short-term model (``with_stm``): the network's distribution
  and PPM* C*I's short-term model of the melody so far, mixed by the entropy-weighted arithmetic
  mean of ``musicgen.metrics.ppm.combine`` (thesis Eq. 6.9), its bias chosen on fink.
- Settings (``choose_settings``): one grid per network, searched one setting at a time in the
  order written (each setting's values tried with the others at their values so far, the best
  kept), by ``k``-fold cross-validation on fink, each fold training on as many melodies as a
  benchmark training fold holds; never on kinder or the chorales. The model's and the training's
  settings are judged on the network alone, dynamic evaluation's on the network with it (on the
  first ``eval_melodies`` melodies of each fink test fold), the bias on the combination.
- Seeds (``seeded_rows``): each network row is trained with every seed of ``seeds`` on the same
  folds (those of ``seed``, the PPM* rows' folds); its figure is the mean over seeds and melodies
  with the two-level interval of ``seed_piece_interval`` over (seeds, melodies).
- Contenders (``contender_tests``): the rows named before the run in ``contenders:`` of the config,
  each tested one-sided against the thesis's figure (is it below it?), Holm's correction over
  those run; every other row is exploratory.
"""

from __future__ import annotations

import copy
import datetime
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musicgen.errors import ConfigError
from musicgen.experiments import pearce2005 as bm
from musicgen.metrics.ppm import PPM, combine
from musicgen.metrics.statistics import holm, seed_piece_interval

log = logging.getLogger(__name__)

LN2 = math.log(2)
PRETRAINING = "pre-training"
LEARNS = "learns from the test melody"
#: What each kind of row may see (the report's first column).
SEES = {"fold": bm.FOLD_ONLY, "dynamic": f"training folds; {LEARNS}", "pre": f"training folds; {PRETRAINING}",
        "pre_dynamic": f"training folds; {PRETRAINING}; {LEARNS}"}
DYNAMIC = "dynamic evaluation"
STM = "PPM* STM"
GROUPS = ("model", "training", "dynamic", "bias")  # what a grid key may set


# ----------------------------------------------------------------------------- short-term learning


def dynamic_log_dists(model: torch.nn.Module, melody: list[int], alphabet: list[int], lr: float = 0.0,
                      steps: int = 0) -> np.ndarray:
    """``(len(melody), |alphabet|)`` natural-log distributions of each note given the notes before
    it, over the alphabet (the network's distribution renormalised over it). With ``lr`` and
    ``steps`` (dynamic evaluation), after note ``t`` is predicted a copy of the model takes ``steps``
    SGD steps on the notes ``0..t``; note ``t``'s distribution is read before the first of them.
    ``model`` itself is never changed (every melody starts from the same weights)."""
    ids = torch.tensor([bm.N_SPECIAL + p for p in alphabet])
    col = {p: i for i, p in enumerate(alphabet)}
    e = torch.from_numpy(bm.encode(melody))[None]  # (1, n + 1): BOS, then the notes
    n = len(melody)
    if n + 1 > bm.MAX_LEN + 1:
        raise ValueError(f"a melody of {n} notes is longer than the window ({bm.MAX_LEN})")
    model.eval()
    if not (lr and steps):
        with torch.no_grad():
            return model(e[:, :-1])[0].float()[:, ids].log_softmax(-1).double().numpy()
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=float(lr))
    targets = torch.tensor([col[p] for p in melody])
    out = np.empty((n, len(alphabet)))
    for t in range(n):
        for step in range(int(steps)):
            logp = model(e[:, : t + 1])[0].float()[:, ids].log_softmax(-1)  # (t + 1, |A|): notes 0..t
            if step == 0:
                out[t] = logp[-1].detach().double().numpy()  # note t, before any step has seen it
            loss = F.nll_loss(logp, targets[: t + 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    return out


def stm_dists(melody: list[int], alphabet: list[int], ppm: dict[str, Any]) -> np.ndarray:
    """PPM*'s short-term model of the melody so far (thesis STM, emptied per melody): each note's
    distribution computed before the note is counted."""
    settings = {k: ppm[k] for k in ("escape", "exclusion", "update_exclusion")}
    return PPM(alphabet, **settings).predict_sequence(melody, learn=True)


def with_stm(log_dists: np.ndarray, stm: np.ndarray, bias: float) -> np.ndarray:
    """The network's log-distributions combined with the short-term model's distributions, note
    by note (``combine``, thesis Eq. 6.9); natural-log distributions."""
    return np.log(combine([np.exp(log_dists), stm], bias))


def true_log_probs(log_dists: np.ndarray, melody: list[int], alphabet: list[int]) -> np.ndarray:
    col = {p: i for i, p in enumerate(alphabet)}
    return log_dists[np.arange(len(melody)), [col[p] for p in melody]]


def melody_bits(log_probs: np.ndarray) -> float:
    return float(-np.sum(log_probs) / LN2 / len(log_probs))


# ----------------------------------------------------------------------------- folds and seeds


def fold_log_dists(melodies: list[list[int]], spec: dict, train: dict, store: bm.Store, tag: str, seed: int,
                   fold_seed: int, k: int, variants: dict[str, dict], init: dict | None = None,
                   train_size: int | None = None) -> dict[str, dict[int, np.ndarray]]:
    """The benchmark's protocol for a network: per fold (``bm.folds(n, k, fold_seed)``, the PPM*
    rows' folds), a network trained on the other folds (``train_size``: a random subset that
    large) with training seed ``seed``, then each test melody's log-distributions
    (``dynamic_log_dists``) under each variant ``{"lr", "steps", "limit"}`` (``limit``: only the
    first that many melodies of each test fold). Returns variant -> melody index -> ``(n, |A|)``.
    Each fold's variant is kept in ``store``; a fold is trained only when a variant is missing."""
    alphabet = sorted({p for m in melodies for p in m})
    key = store.key(spec, train, seed, fold_seed, k, train_size, len(melodies), sum(map(len, melodies)),
                    bm.weights_key(init))
    out: dict[str, dict[int, np.ndarray]] = {v: {} for v in variants}
    for f, test in enumerate(bm.folds(len(melodies), k, fold_seed)):
        rest = np.setdiff1d(np.arange(len(melodies)), test)
        run_seed = seed * 1009 + f  # distinct for every (seed, fold); seed 0 keeps the old fold seeds
        if train_size is not None:
            rest = np.random.default_rng(run_seed).choice(rest, size=min(train_size, len(rest)), replace=False)
        held: list[torch.nn.Module] = []

        def trained(rest=rest, held=held, run_seed=run_seed) -> torch.nn.Module:
            if not held:
                torch.manual_seed(run_seed)
                model = bm.build_model(spec)
                if init is not None:
                    model.load_state_dict(init)
                held.append(bm.fit(model, [melodies[i] for i in rest], train, seed=run_seed))
            return held[0]

        for name, v in variants.items():
            idx = test if v.get("limit") is None else test[: int(v["limit"])]
            lr, steps = float(v.get("lr", 0.0)), int(v.get("steps", 0))
            if not (lr and steps):
                lr, steps = 0.0, 0  # one static variant, whatever its name
            lds = store.log_probs(
                f"{tag}-{key}/fold{f}-{store.key(lr, steps, len(idx))}",
                lambda idx=idx, lr=lr, steps=steps: [dynamic_log_dists(trained(), melodies[i], alphabet, lr, steps)
                                                     for i in idx])
            out[name].update({int(i): ld for i, ld in zip(idx, lds)})
    return out


def summarise_seeds(log_probs_by_seed: list[list[np.ndarray]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """A row scored with several training seeds on the same melodies: the mean over seeds and
    melodies of the per-melody cross-entropy, with the two-level interval of ``seed_piece_interval``
    over (seeds, melodies) (one seed: the bootstrap over melodies); the per-note mean over seeds;
    each melody's bits per seed (``melody_bits_by_seed``) and averaged over seeds (``melody_bits``)."""
    bits = np.array([[melody_bits(lp) for lp in lps] for lps in log_probs_by_seed])  # (S, P)
    iv = seed_piece_interval(bits, np.ones(bits.shape[1]), n_boot=n_boot, seed=seed)
    per_note = np.mean([bm.bits_per_note(lps)["per_note"] for lps in log_probs_by_seed])
    return {"per_melody": iv["value"], "per_melody_interval": [iv["low"], iv["high"]], "per_note": float(per_note),
            "melodies": bits.shape[1], "seeds": bits.shape[0], "melody_bits": bits.mean(0).tolist(),
            "melody_bits_by_seed": bits.tolist()}


def row_names(name: str, trained: str) -> tuple[str, str, str]:
    """The three rows of one trained network: alone, with dynamic evaluation, and that combined
    with PPM*'s short-term model (``trained``: how it was trained, e.g. "training folds")."""
    alone = f"{name}, {bm.FOLD_ONLY}" if trained == "training folds" else f"{name}, {trained}"
    return alone, f"{name}, {trained}, {DYNAMIC}", f"{name}, {trained}, {DYNAMIC} + {STM}"


def seeded_rows(names: tuple[str, str, str], melodies: list[list[int]], spec: dict, train: dict, settings: dict,
                store: bm.Store, tag: str, seeds: list[int], fold_seed: int, k: int, ppm: dict, n_boot: int,
                init: dict | None = None) -> dict[str, dict[str, Any]]:
    """One trained network's rows on one dataset (``names``: ``row_names``), each over ``seeds``:
    the network alone, with dynamic evaluation (``settings["dynamic"]``), and that combined with
    PPM*'s short-term model (``settings["bias"]``). Row name -> ``summarise_seeds``."""
    alphabet = sorted({p for m in melodies for p in m})
    stm = [stm_dists(m, alphabet, ppm) for m in melodies]
    variants = {"static": {}, "dynamic": dict(settings["dynamic"])}
    rows: dict[str, list[list[np.ndarray]]] = {row: [] for row in names}
    for s in seeds:
        lds = fold_log_dists(melodies, spec, train, store, tag, s, fold_seed, k, variants, init=init)
        order = range(len(melodies))
        lists = ([true_log_probs(lds["static"][i], melodies[i], alphabet) for i in order],
                 [true_log_probs(lds["dynamic"][i], melodies[i], alphabet) for i in order],
                 [true_log_probs(with_stm(lds["dynamic"][i], stm[i], settings["bias"]), melodies[i], alphabet)
                  for i in order])
        for row, lps in zip(rows, lists):
            rows[row].append(lps)
    return {row: summarise_seeds(lps, n_boot, fold_seed) for row, lps in rows.items()}


# ----------------------------------------------------------------------------- settings chosen on fink


def set_path(settings: dict, path: str, value: Any) -> dict:
    """A copy of ``settings`` with ``path`` (``"model.dropout"``, ``"bias"``) set to ``value``; a
    dict value is merged into what is there (``model: [{d_model: 256, d_ff: 768}]``)."""
    out = copy.deepcopy(settings)
    *parents, last = path.split(".")
    if parents[:1] and parents[0] not in GROUPS or not parents and last not in GROUPS:
        raise ConfigError(f"tune.grid key {path!r}: it must start with one of {', '.join(GROUPS)}")
    node = out
    for p in parents:
        node = node[p]
    if isinstance(value, dict):
        node[last] = {**node[last], **value}
    else:
        node[last] = value
    return out


def fink_score(settings: dict, group: str, fink: list[list[int]], store: bm.Store, tag: str, tune: dict,
               seed: int, train_size: int, ppm: dict, init: dict | None = None) -> float:
    """Bits per note (mean over melodies) by ``tune["folds"]``-fold cross-validation on fink: the
    network alone for a model or training setting (every melody), with dynamic evaluation for a
    dynamic one and with the short-term model too for the bias (the first ``eval_melodies`` of each
    test fold)."""
    static = group in ("model", "training")
    variant = {} if static else {**settings["dynamic"], "limit": tune["eval_melodies"]}
    lds = fold_log_dists(fink, settings["model"], settings["training"], store, tag, seed, seed, int(tune["folds"]),
                         {"v": variant}, init=init, train_size=train_size)["v"]
    alphabet = sorted({p for m in fink for p in m})
    bits = []
    for i, ld in lds.items():
        if group == "bias":
            ld = with_stm(ld, stm_dists(fink[i], alphabet, ppm), settings["bias"])
        bits.append(melody_bits(true_log_probs(ld, fink[i], alphabet)))
    return float(np.mean(bits))


def choose_settings(start: dict, grid: dict[str, list], score) -> tuple[dict, list[dict]]:
    """One setting at a time, in the grid's order: each of its values scored (``score(settings,
    group)``, lower better) with the other settings at their values so far, the best kept.
    Returns the chosen settings and the trace (setting, value -> score, chosen value)."""
    current, trace = copy.deepcopy(start), []
    for path, values in grid.items():
        if not values:
            raise ConfigError(f"tune.grid.{path} is empty: give at least one value")
        group = path.split(".")[0]
        scores = [(score(set_path(current, path, v), group), i) for i, v in enumerate(values)]
        best = min(scores)[1]
        current = set_path(current, path, values[best])
        trace.append({"setting": path, "scores": [[v, s] for v, (s, _) in zip(values, scores)], "chose": values[best]})
        log.info("fink: %s -> %s (%s)", path, values[best], ", ".join(f"{v}: {s:.3f}" for v, (s, _) in
                                                                        zip(values, scores)))
    return current, trace


# ----------------------------------------------------------------------------- the rows


def model_rows(name: str, spec: dict, cfg: dict, data: dict[str, list[list[int]]], corpus: list[list[int]] | None,
               store: bm.Store) -> tuple[dict, dict]:
    """One network: settings chosen on fink (``tune.grid[name]``, recorded with the date in the
    store, so a resumed run reports the choice as it was made), then its rows on both datasets over
    ``seeds``; with a pre-training ``corpus``, the pre-trained rows too (fine-tuning's learning rate
    chosen on fink as before, ``tune.fine_grid``)."""
    tune = cfg["tune"]
    size = int(np.mean([len(data[n]) * (cfg["folds"] - 1) / cfg["folds"] for n in ("chorales", "kinder")]))
    start = {"model": spec, "training": cfg["fold_training"], "dynamic": cfg["dynamic"],
             "bias": cfg["combination"]["bias"]}
    grid = (tune.get("grid") or {}).get(name) or {}
    ppm = cfg["ppm"]

    def score(settings: dict, group: str) -> float:
        return fink_score(settings, group, data["fink"], store, f"tune-{name}", tune, cfg["seed"], size, ppm)

    def choose() -> dict:
        chosen, trace = choose_settings(start, grid, score)
        return {"chosen": chosen, "trace": trace, "date": datetime.date.today().isoformat()}

    record = store.record(f"tune-{name}-{store.key(start, grid, tune, size, cfg['seed'], ppm)}", choose)
    chosen = record["chosen"]
    tuning = {"fold_only": record}
    common = {"seeds": cfg["seeds"], "fold_seed": cfg["seed"], "k": cfg["folds"], "ppm": ppm, "n_boot": cfg["n_boot"]}
    out: dict[str, dict] = {}

    def add(rows_by_ds: dict[str, dict[str, dict]], sees: list[str]) -> None:
        for ds, rows in rows_by_ds.items():
            for (row, r), seen in zip(rows.items(), sees):
                out.setdefault(row, {"sees": seen})[ds] = r

    add({ds: seeded_rows(row_names(name, "training folds"), data[ds], chosen["model"], chosen["training"], chosen,
                         store, f"{ds}-{name}", **common) for ds in ("chorales", "kinder")},
        [SEES["fold"], SEES["dynamic"], SEES["dynamic"]])
    if corpus is not None:
        weights = bm.pretrain(name, chosen["model"], cfg["pretraining"], corpus, store, cfg["seed"])
        fine_train, fine_rows = bm.tune(data["fink"], chosen["model"], cfg["fine_tuning"], tune["fine_grid"], store,
                                        f"tune-{name}-fine", cfg["seed"], size, init=weights)
        tuning["fine_tuning"] = {"chosen": fine_train, "grid": fine_rows}
        for label, train in (("pre-trained, not fine-tuned", {**fine_train, "steps": 0}),
                             ("pre-trained and fine-tuned per fold", fine_train)):
            add({ds: seeded_rows(row_names(name, label), data[ds], chosen["model"], train, chosen, store,
                                 f"{ds}-{name}", init=weights, **common) for ds in ("chorales", "kinder")},
                [SEES["pre"], SEES["pre_dynamic"], SEES["pre_dynamic"]])
    for row, r in out.items():
        log.info("%s: chorales %.3f, kinder %.3f bits per note", row, r["chorales"]["per_melody"],
                 r["kinder"]["per_melody"])
    return tuning, out


def neural_rows(cfg: dict, data: dict[str, list[list[int]]], store: bm.Store) -> dict[str, Any]:
    """Every network's rows (``model_rows``), the networks side by side in ``workers`` processes."""
    import os

    corpus, corpus_stats = None, None
    if cfg["pretrained"]:
        benchmark = [m for name in ("chorales", "kinder", "fink") for m in data[name]]
        corpus, corpus_stats = bm.pretraining_melodies(Path(cfg["data_dir"]), benchmark)
    models = cfg["models"]
    workers = max(1, min(int(cfg["workers"]), len(models)))
    if workers == 1:
        done = [model_rows(name, spec, cfg, data, corpus, store) for name, spec in models.items()]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // workers)
        log.info("training %s side by side: %d processes, %d thread(s) each", ", ".join(models), workers, threads)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=bm._worker_start, initargs=(threads,)) as pool:
            futures = [pool.submit(model_rows, name, spec, cfg, data, corpus, store) for name, spec in models.items()]
            done = [f.result() for f in futures]
    out: dict[str, Any] = {"pretraining_corpus": corpus_stats, "tuning": {}, "rows": {}}
    for name, (tuning, rows) in zip(models, done):
        out["tuning"][name] = tuning
        out["rows"].update(rows)
    return out


# ----------------------------------------------------------------------------- contenders


def below_p_value(bits_by_seed: np.ndarray, figure: float) -> float:
    """One-sided p-value of "the row's mean bits per note is below ``figure``" from the same
    two-level interval as the row's (``seed_piece_interval``, t method): the smallest ``alpha`` at
    which the upper end of its ``1 - 2 alpha`` interval is below ``figure``. One seed: the one-sided
    t-test over melodies."""
    from scipy import optimize, stats

    d = np.asarray(bits_by_seed, dtype=np.float64) - figure
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"bits_by_seed must be (seeds, melodies) with two melodies or more, got {d.shape}")
    if d.shape[0] == 1:
        return float(stats.ttest_1samp(d[0], 0.0, alternative="less").pvalue)
    ones = np.ones(d.shape[1])
    value = float(d.mean())

    def gap(level: float) -> float:  # the interval's end nearest 0, minus 0
        iv = seed_piece_interval(d, ones, level=level)
        return iv["high"] if value < 0 else iv["low"]

    lo, hi = 1e-12, 1 - 1e-12
    if value == 0 or np.sign(gap(lo)) == np.sign(gap(hi)):  # no spread, or beyond every level
        return 0.5 if value == 0 else (0.0 if value < 0 else 1.0)
    level = optimize.brentq(gap, lo, hi, xtol=1e-12)
    return float((1 - level) / 2 if value < 0 else (1 + level) / 2)


def contender_tests(contenders: dict[str, dict[str, dict]], rows: dict[str, dict], ppm_rows: dict,
                    holds: dict, alpha: float = 0.05) -> list[dict[str, Any]]:
    """Each pre-registered contender (dataset -> question -> ``{row, thesis, reference, run}``):
    its figure, the one-sided p-value of being below the thesis's figure (``below_p_value``), Holm's
    adjusted p-value over the contenders that were run, and its seed-aware paired differences from
    the reproduced PPM* ``reference`` model and the combined model, melody by melody (``None``
    where that reproduction does not hold)."""
    out = []
    for ds, questions in contenders.items():
        for question, c in questions.items():
            r = rows.get(c["row"], {}).get(ds)
            item = {"dataset": ds, "question": question, "row": c["row"], "thesis": c["thesis"],
                    "reference": c.get("reference", "combined"), "run": r is not None}
            if r is not None:
                by_seed = np.asarray(r.get("melody_bits_by_seed", [r["melody_bits"]]))
                item.update(figure=r["per_melody"], interval=r["per_melody_interval"],
                            p_value=below_p_value(by_seed, c["thesis"]))
                item["paired"] = {}
                for ref in dict.fromkeys([item["reference"], "combined"]):
                    if holds.get(ref, {}).get(ds, {}).get("holds"):
                        diffs = by_seed - np.asarray(ppm_rows[ds][ref]["melody_bits"])[None]
                        item["paired"][ref] = seed_piece_interval(diffs, np.ones(diffs.shape[1]))
                    else:
                        item["paired"][ref] = None
            out.append(item)
    run = [c for c in out if c["run"]]
    adjusted = holm([c["p_value"] for c in run], alpha)
    for c, p, rej in zip(run, adjusted["adjusted"], adjusted["reject"]):
        c.update(holm_p=p, below_thesis=rej)
    return out


def contender_report(tests: list[dict[str, Any]], alpha: float = 0.05) -> list[str]:
    lines = ["", "Pre-registered contenders (named in `contenders:` of `musicgen/conf/benchmark.yaml` before the "
             "reported run): only these are compared with the thesis's figures, one-sided (below it?), with Holm's "
             f"correction over those run (alpha {alpha}); every other row is exploratory. Paired: the contender minus "
             "the reproduced PPM* model melody by melody, seed-aware (`seed_piece_interval` over seeds and melodies).",
             "", "| dataset | question | row | bits per note | thesis | Holm p | below the thesis | "
             "paired: minus PPM* |",
             "|---|---|---|---|---|---|---|---|"]
    for c in tests:
        if not c["run"]:
            lines.append(f"| {c['dataset']} | {c['question']} | {c['row']} | not run | {c['thesis']:.3f} | - | - | - |")
            continue
        lo, hi = c["interval"]
        paired = "; ".join(f"{PPM_LABEL.get(ref, ref)}: {p['value']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]"
                           if p else f"{PPM_LABEL.get(ref, ref)}: reproduction off" for ref, p in c["paired"].items())
        lines.append(f"| {c['dataset']} | {c['question']} | {c['row']} | {c['figure']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{c['thesis']:.3f} | {c['holm_p']:.3g} | {'yes' if c['below_thesis'] else 'no'} | {paired} |")
    return lines


PPM_LABEL = {"combined": "combined", "ltm": "LTM", "ltm_plus": "LTM+", "stm": "STM"}


def contender_rows(contenders: dict) -> set[str]:
    return {c["row"] for qs in contenders.values() for c in qs.values()}


__all__ = ["choose_settings", "contender_tests", "dynamic_log_dists", "fold_log_dists", "neural_rows",
           "row_names", "seeded_rows", "summarise_seeds", "with_stm", "below_p_value"]
