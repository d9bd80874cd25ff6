"""The protocol the rows share: the folds, bits per note and their intervals, the n-gram's and the
networks' cross-validation (each fold kept in the ``Store``), pre-training, the training seeds and
the settings chosen on fink:

- Settings (``choose_settings``): one grid per network, searched one setting at a time in the
  order written (each setting's values tried with the others at their values so far, the best
  kept), by ``k``-fold cross-validation on fink, each fold training on as many melodies as a
  benchmark training fold holds; never on kinder or the chorales. The model's and the training's
  settings are judged on the network alone, dynamic evaluation's on the network with it (on the
  first ``eval_melodies`` melodies of each fink test fold), the bias on the combination.
- Seeds (``seeded_rows``): each network row is trained with every seed of ``seeds`` on the same
  folds (those of ``seed``, the PPM* rows' folds); its figure is the mean over seeds and melodies
  with the two-level interval of ``seed_piece_interval`` over (seeds, melodies).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch

from musicgen.constants import BOS_ID
from musicgen.errors import ConfigError
from musicgen.experiments.pearce2005.networks import (
    N_SPECIAL,
    build_model,
    dynamic_log_dists,
    fit,
    melody_bits,
    melody_log_probs,
    stm_dists,
    true_log_probs,
    with_stm,
)
from musicgen.experiments.pearce2005.store import Store, features_key, weights_key
from musicgen.experiments.pearce2005.thesis import DYNAMIC, FOLD_ONLY, STM
from musicgen.metrics import NgramLM
from musicgen.metrics.bootstrap import bootstrap_ci, mean_of
from musicgen.metrics.statistics import seed_piece_interval

log = logging.getLogger(__name__)


def folds(n: int, k: int = 10, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint folds of ``range(n)`` drawn at random (every melody in exactly one)."""
    return [np.sort(f) for f in np.array_split(np.random.default_rng(seed).permutation(n), k)]


def bits_per_note(log_probs: list[np.ndarray]) -> dict[str, float]:
    """From each melody's natural-log probabilities of its notes: the mean over melodies of the
    per-melody cross-entropy (thesis Eq. 6.6, in bits) and the per-note mean over all notes."""
    per_melody = [-lp.sum() / math.log(2) / len(lp) for lp in log_probs if len(lp)]
    total = sum(-lp.sum() / math.log(2) for lp in log_probs)
    return {"per_melody": float(np.mean(per_melody)), "per_note": float(total / sum(len(lp) for lp in log_probs))}


def summarise(log_probs: list[np.ndarray], seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """``bits_per_note`` with a 95% bootstrap interval of the per-melody mean over melodies, and
    each melody's cross-entropy (``melody_bits``, in the melodies' order: what pairs rows)."""
    out = bits_per_note(log_probs)
    per_melody = np.array([-lp.sum() / math.log(2) / len(lp) for lp in log_probs if len(lp)])
    _, lo, hi = bootstrap_ci(per_melody, mean_of(0), n_boot=n_boot, seed=seed)
    out.update(per_melody_interval=[lo, hi], melodies=len(log_probs), melody_bits=per_melody.tolist())
    return out


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
    return {**summarise(log_probs, seed, n_boot), "order": order}


def ngram_name(order: int) -> str:
    return f"{order}-gram, interpolated Kneser-Ney (order chosen on fink)"


def choose_order(melodies: list[list[int]], orders: range) -> tuple[int, dict[int, float]]:
    """The n-gram order with the lowest cross-validated bits per note (mean over melodies)."""
    scores = {o: ngram_cross_validation(melodies, o, n_boot=10)["per_melody"] for o in orders}
    return min(scores, key=scores.get), scores


def neural_cross_validation(melodies: list[list[int]], spec: dict, train: dict, store: Store, tag: str,
                            seed: int, k: int = 10, init: dict | None = None, n_boot: int = 1000,
                            train_size: int | None = None) -> dict[str, Any]:
    """The n-gram's protocol for a network: per fold, a model built from ``spec`` (its weights
    from ``init`` when pre-trained) trained on the other folds only (``train_size``: a random
    subset of them that large), then every note of the fold's melodies scored."""
    alphabet = sorted({p for m in melodies for p in m})
    log_probs: list[np.ndarray] = [np.zeros(0)] * len(melodies)
    key = store.key(spec, train, seed, k, train_size, len(melodies), sum(map(len, melodies)),
                    *([weights_key(init)] if init is not None else []))
    for f, test in enumerate(folds(len(melodies), k, seed)):
        rest = np.setdiff1d(np.arange(len(melodies)), test)
        if train_size is not None:
            rest = np.random.default_rng(seed + f).choice(rest, size=min(train_size, len(rest)), replace=False)

        def compute(f=f, test=test, rest=rest):
            torch.manual_seed(seed + f)
            model = build_model(spec)
            if init is not None:
                model.load_state_dict(init)
            fit(model, [melodies[i] for i in rest], train, seed=seed + f)
            return melody_log_probs(model, [melodies[i] for i in test], alphabet)

        for i, lp in zip(test, store.log_probs(f"{tag}-{key}/fold{f}", compute)):
            log_probs[i] = lp
    return summarise(log_probs, seed, n_boot)


def pretrain(name: str, spec: dict, train: dict, corpus: list[list[int]], store: Store, seed: int) -> dict:
    """Weights of ``spec`` pre-trained on ``corpus`` (kept in the store: trained once)."""
    key = store.key(spec, train, seed, len(corpus), sum(map(len, corpus)))

    def compute():
        torch.manual_seed(seed)
        model = build_model(spec)
        log.info("pre-training the %s on %d melodies (%d notes), %d steps", name, len(corpus),
                 sum(map(len, corpus)), train["steps"])
        return fit(model, corpus, train, seed=seed, label=f"pre-training {name}").state_dict()

    return store.weights(f"pretrain-{name}-{key}", compute)


def tune(melodies: list[list[int]], spec: dict, base: dict, grid: dict[str, list], store: Store, tag: str,
         seed: int, train_size: int, init: dict | None = None, k: int = 3) -> tuple[dict, list[dict]]:
    """The training settings (``base`` with each combination of ``grid``) with the lowest bits per
    note by ``k``-fold cross-validation on ``melodies`` (the fink collection: never the test
    data), each fold training on ``train_size`` melodies, the size of a benchmark training fold."""
    import itertools

    names, rows = list(grid), []
    for values in itertools.product(*grid.values()):
        settings = {**base, **dict(zip(names, values))}
        r = neural_cross_validation(melodies, spec, settings, store, tag, seed, k=k, init=init, n_boot=10,
                                    train_size=train_size)
        rows.append({**dict(zip(names, values)), "per_melody": r["per_melody"]})
        log.info("%s on fink: %s -> %.3f bits per note", tag, dict(zip(names, values)), r["per_melody"])
    best = min(rows, key=lambda r: r["per_melody"])
    return {**base, **{n: best[n] for n in names}}, rows


# ----------------------------------------------------------------------------- folds and seeds

_POOL: ProcessPoolExecutor | None = None  # set by ``fold_workers``


def _worker_start(threads: int) -> None:
    """A fold worker: ``threads`` intra-op threads, and log lines on stderr like the parent's."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(processName)s] %(message)s")


@contextlib.contextmanager
def fold_workers(workers: int, threads: int = 1) -> Iterator[None]:
    """Within the block, the folds a network row still needs (``fold_log_dists``) are trained and
    scored side by side in ``workers`` processes of ``threads`` torch threads each, and kept in the
    store as one process would keep them (the same names, seeds and results); ``workers`` 1: here."""
    global _POOL
    if workers <= 1:
        yield
        return
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                             initargs=(threads,)) as pool:
        _POOL = pool
        try:
            yield
        finally:
            _POOL = None


def fold_log_dists(melodies: list[list[int]], spec: dict, train: dict, store: Store, tag: str, seed: int,
                   fold_seed: int, k: int, variants: dict[str, dict], init: dict | None = None,
                   train_size: int | None = None, features: list[np.ndarray] | None = None,
                   only: int | None = None, keep_weights: bool = False) -> dict[str, dict[int, np.ndarray]]:
    """The benchmark's protocol for a network: per fold (``folds(n, k, fold_seed)``, the PPM*
    rows' folds), a network trained on the other folds (``train_size``: a random subset that
    large) with training seed ``seed``, then each test melody's log-distributions
    (``dynamic_log_dists``) under each variant ``{"lr", "steps", "limit"}`` (``limit``: only the
    first that many melodies of each test fold). Returns variant -> melody index -> ``(n, |A|)``.
    Each fold's variant is kept in ``store``; a fold is trained only when a variant is missing.
    ``features``: each melody's note features, for a rhythm network (``spec["rhythm"]``); their
    digest joins the stored name (a pitch-only network's name is as it always was). Inside
    ``fold_workers`` the missing folds are computed side by side first; ``only``: that fold alone
    (what a worker computes). ``keep_weights``: each fold's trained weights are kept in the store
    too, so that another variant scored later (the settings searched on fink) is not trained again."""
    alphabet = sorted({p for m in melodies for p in m})
    key = store.key(spec, train, seed, fold_seed, k, train_size, len(melodies), sum(map(len, melodies)),
                    weights_key(init), *([features_key(features)] if features is not None else []))
    parts = folds(len(melodies), k, fold_seed)

    def piece(f: int, v: dict) -> tuple[str, np.ndarray, float, int]:
        idx = parts[f] if v.get("limit") is None else parts[f][: int(v["limit"])]
        lr, steps = float(v.get("lr", 0.0)), int(v.get("steps", 0))
        if not (lr and steps):
            lr, steps = 0.0, 0  # one static variant, whatever its name
        return f"{tag}-{key}/fold{f}-{store.key(lr, steps, len(idx))}", idx, lr, steps

    if only is None and _POOL is not None:  # the workers train; this process never does
        missing = [f for f in range(len(parts))
                   if not all(store.has_log_probs(piece(f, v)[0]) for v in variants.values())]
        if missing:
            args = (melodies, spec, train, store, tag, seed, fold_seed, k, variants, init, train_size, features)
            for done in [_POOL.submit(fold_log_dists, *args, only=f, keep_weights=keep_weights) for f in missing]:
                done.result()
    out: dict[str, dict[int, np.ndarray]] = {v: {} for v in variants}
    for f, test in enumerate(parts):
        if only is not None and f != only:
            continue
        rest = np.setdiff1d(np.arange(len(melodies)), test)
        run_seed = seed * 1009 + f  # distinct for every (seed, fold); seed 0 keeps the old fold seeds
        if train_size is not None:
            rest = np.random.default_rng(run_seed).choice(rest, size=min(train_size, len(rest)), replace=False)
        held: list[torch.nn.Module] = []

        def train_fold(rest=rest, run_seed=run_seed) -> torch.nn.Module:
            torch.manual_seed(run_seed)
            model = build_model(spec)
            if init is not None:
                model.load_state_dict(init)
            return fit(model, [melodies[i] for i in rest], train, seed=run_seed,
                       features=None if features is None else [features[i] for i in rest])

        def trained(f=f, held=held, train_fold=train_fold) -> torch.nn.Module:
            if not held and keep_weights:
                model = build_model(spec)
                model.load_state_dict(store.weights(f"{tag}-{key}/fold{f}-weights", lambda: train_fold().state_dict()))
                held.append(model.eval())
            elif not held:
                held.append(train_fold())
            return held[0]

        for name, v in variants.items():
            path, idx, lr, steps = piece(f, v)
            lds = store.log_probs(
                path,
                lambda idx=idx, lr=lr, steps=steps: [
                    dynamic_log_dists(trained(), melodies[i], alphabet, lr, steps,
                                      None if features is None else features[i]) for i in idx])
            out[name].update({int(i): ld for i, ld in zip(idx, lds)})
    return out


def summarise_seeds(log_probs_by_seed: list[list[np.ndarray]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """A row scored with several training seeds on the same melodies: the mean over seeds and
    melodies of the per-melody cross-entropy, with the two-level interval of ``seed_piece_interval``
    over (seeds, melodies) (one seed: the bootstrap over melodies); the per-note mean over seeds;
    each melody's bits per seed (``melody_bits_by_seed``) and averaged over seeds (``melody_bits``)."""
    bits = np.array([[melody_bits(lp) for lp in lps] for lps in log_probs_by_seed])  # (S, P)
    iv = seed_piece_interval(bits, np.ones(bits.shape[1]), n_boot=n_boot, seed=seed)
    per_note = np.mean([bits_per_note(lps)["per_note"] for lps in log_probs_by_seed])
    return {"per_melody": iv["value"], "per_melody_interval": [iv["low"], iv["high"]], "per_note": float(per_note),
            "melodies": bits.shape[1], "seeds": bits.shape[0], "melody_bits": bits.mean(0).tolist(),
            "melody_bits_by_seed": bits.tolist()}


def row_names(name: str, trained: str) -> tuple[str, str, str]:
    """The three rows of one trained network: alone, with dynamic evaluation, and that combined
    with PPM*'s short-term model (``trained``: how it was trained, e.g. "training folds")."""
    alone = f"{name}, {FOLD_ONLY}" if trained == "training folds" else f"{name}, {trained}"
    return alone, f"{name}, {trained}, {DYNAMIC}", f"{name}, {trained}, {DYNAMIC} + {STM}"


def seeded_rows(names: tuple[str, str, str], melodies: list[list[int]], spec: dict, train: dict, settings: dict,
                store: Store, tag: str, seeds: list[int], fold_seed: int, k: int, ppm: dict, n_boot: int,
                init: dict | None = None, features: list[np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """One trained network's rows on one dataset (``names``: ``row_names``), each over ``seeds``:
    the network alone, with dynamic evaluation (``settings["dynamic"]``), and that combined with
    PPM*'s short-term model (``settings["bias"]``). Row name -> ``summarise_seeds``. ``features``:
    the melodies' note features, for a rhythm network."""
    alphabet = sorted({p for m in melodies for p in m})
    stm = [stm_dists(m, alphabet, ppm) for m in melodies]
    variants = {"static": {}, "dynamic": dict(settings["dynamic"])}
    rows: dict[str, list[list[np.ndarray]]] = {row: [] for row in names}
    for s in seeds:
        lds = fold_log_dists(melodies, spec, train, store, tag, s, fold_seed, k, variants, init=init,
                             features=features)
        order = range(len(melodies))
        lists = ([true_log_probs(lds["static"][i], melodies[i], alphabet) for i in order],
                 [true_log_probs(lds["dynamic"][i], melodies[i], alphabet) for i in order],
                 [true_log_probs(with_stm(lds["dynamic"][i], stm[i], settings["bias"]), melodies[i], alphabet)
                  for i in order])
        for row, lps in zip(rows, lists):
            rows[row].append(lps)
    return {row: summarise_seeds(lps, n_boot, fold_seed) for row, lps in rows.items()}


# ----------------------------------------------------------------------------- settings chosen on fink


GROUPS = ("model", "training", "dynamic", "bias")  # what a grid key may set


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


def fink_score(settings: dict, group: str, fink: list[list[int]], store: Store, tag: str, tune: dict,
               seed: int, train_size: int, ppm: dict, init: dict | None = None,
               features: list[np.ndarray] | None = None) -> float:
    """Bits per note (mean over melodies) by ``tune["folds"]``-fold cross-validation on fink: the
    network alone for a model or training setting (every melody), with dynamic evaluation for a
    dynamic one and with the short-term model too for the bias (the first ``eval_melodies`` of each
    test fold). ``features``: fink's note features, for a rhythm network."""
    static = group in ("model", "training")
    variant = {} if static else {**settings["dynamic"], "limit": tune["eval_melodies"]}
    lds = fold_log_dists(fink, settings["model"], settings["training"], store, tag, seed, seed, int(tune["folds"]),
                         {"v": variant}, init=init, train_size=train_size, features=features,
                         keep_weights=not static)["v"]  # one training for every dynamic setting and bias
    alphabet = sorted({p for m in fink for p in m})
    bits = []
    for i, ld in lds.items():
        if group == "bias":
            ld = with_stm(ld, stm_dists(fink[i], alphabet, ppm), settings["bias"])
        bits.append(melody_bits(true_log_probs(ld, fink[i], alphabet)))
    return float(np.mean(bits))


def _each(fn, values: list, first_alone: bool = False) -> list:
    """``[fn(v) for v in values]``; inside ``fold_workers`` the values are scored at once (from
    threads of this process that only wait on the workers), so that every value's folds queue for
    the workers together rather than a few at a time. ``first_alone``: the first value is scored
    before the others start (it trains the fold models that the others then reuse)."""
    if _POOL is None or len(values) < 2:
        return [fn(v) for v in values]
    from concurrent.futures import ThreadPoolExecutor

    head = [fn(values[0])] if first_alone else []
    with ThreadPoolExecutor(len(values)) as threads:
        return head + list(threads.map(fn, values[len(head):]))


def choose_settings(start: dict, grid: dict[str, list], score) -> tuple[dict, list[dict]]:
    """One setting at a time, in the grid's order: each of its values scored (``score(settings,
    group)``, lower better) with the other settings at their values so far, the best kept.
    Returns the chosen settings and the trace (setting, value -> score, chosen value)."""
    current, trace = copy.deepcopy(start), []
    for path, values in grid.items():
        if not values:
            raise ConfigError(f"tune.grid.{path} is empty: give at least one value")
        group = path.split(".")[0]
        tried = [set_path(current, path, v) for v in values]
        # a dynamic setting's values share the fold models (kept weights): the first trains them
        scores = [(x, i) for i, x in enumerate(_each(lambda t, g=group: score(t, g), tried, group == "dynamic"))]
        best = min(scores)[1]
        current = set_path(current, path, values[best])
        trace.append({"setting": path, "scores": [[v, s] for v, (s, _) in zip(values, scores)], "chose": values[best]})
        log.info("fink: %s -> %s (%s)", path, values[best], ", ".join(f"{v}: {s:.3f}" for v, (s, _) in
                                                                        zip(values, scores)))
    return current, trace
