"""The thesis's models reproduced (``musicgen.metrics.ppm``, PPM* C*I: Table 6.6's short-term,
long-term, online long-term and combined models) on the benchmark's folds and checked against the
published figures; the long-term models also given the networks' pre-training corpus
(``CorpusPPM``: ``ppm_pretrained``); every other row paired with them melody by melody."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from omegaconf import DictConfig

from musicgen.experiments.pearce2005.networks import stm_dists
from musicgen.experiments.pearce2005.protocol import folds, summarise
from musicgen.experiments.pearce2005.store import Store, corpus_key
from musicgen.experiments.pearce2005.thesis import LEARNS, SEES, TABLE_6_6
from musicgen.metrics.ppm import PPM, combine
from musicgen.metrics.statistics import paired_difference, seed_piece_interval

log = logging.getLogger(__name__)


def ppm_log_probs(melodies: list[list[int]], escape: str = "c", exclusion: bool = True,
                  update_exclusion: bool = False, bias: float = 2, extra_stm: dict | None = None,
                  k: int = 10, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The thesis's models (Table 6.6) by 10-fold cross-validation on the n-gram's folds, over
    the dataset's pitch alphabet; natural-log probability of every note of each melody, per row:
    - ``ltm``: PPM trained on the other folds, fixed;
    - ``ltm_plus``: the same, also counting each test note after predicting it (kept across the
      fold's melodies, taken in order, as IDyOM does);
    - ``stm``: PPM of the test melody so far (empty at each melody's start);
    - ``combined``: ``ltm_plus`` with ``stm``, by the entropy-weighted mean with ``bias`` (Eq. 6.9);
    - with ``extra_stm`` (settings that differ, e.g. IDyOM's later short-term default, escape X
      with update exclusion): ``stm_extra`` and ``combined_extra``, the same with that STM.
    The settings are shared by every model (the thesis's C*I: escape C, unbounded order,
    interpolated smoothing, no update exclusion)."""
    alphabet = sorted({p for m in melodies for p in m})
    settings = {"escape": escape, "exclusion": exclusion, "update_exclusion": update_exclusion}
    rows = list(TABLE_6_6) + (["stm_extra", "combined_extra"] if extra_stm else [])
    out: dict[str, list[np.ndarray]] = {r: [np.zeros(0)] * len(melodies) for r in rows}
    for test in folds(len(melodies), k, seed):
        train = [melodies[i] for i in np.setdiff1d(np.arange(len(melodies)), test)]
        ltm, ltm_plus = PPM(alphabet, **settings).fit(train), PPM(alphabet, **settings).fit(train)
        for i in test:
            m = melodies[i]
            dists = {"ltm": ltm.predict_sequence(m, learn=False), "ltm_plus": ltm_plus.predict_sequence(m, learn=True),
                     "stm": PPM(alphabet, **settings).predict_sequence(m, learn=True)}
            dists["combined"] = combine([dists["ltm_plus"], dists["stm"]], bias)
            if extra_stm:
                dists["stm_extra"] = PPM(alphabet, **{**settings, **extra_stm}).predict_sequence(m, learn=True)
                dists["combined_extra"] = combine([dists["ltm_plus"], dists["stm_extra"]], bias)
            col = [alphabet.index(p) for p in m]
            for r in rows:
                out[r][i] = np.log(dists[r][np.arange(len(m)), col])
    return out


def ppm_rows(melodies: list[list[int]], ppm: dict[str, Any], store: Store | None, tag: str, k: int = 10,
             seed: int = 0, n_boot: int = 1000) -> dict[str, dict[str, Any]]:
    """``ppm_log_probs`` summarised per row; with a ``store``, each row's per-note figures are kept
    under a name derived from the settings (computed once for all rows, reused on resume)."""
    settings = {key: ppm[key] for key in ("escape", "exclusion", "update_exclusion", "bias", "extra_stm")}
    done: dict[str, list[np.ndarray]] = {}

    def compute(row: str) -> list[np.ndarray]:
        if not done:
            done.update(ppm_log_probs(melodies, **settings, k=k, seed=seed))
        return done[row]

    rows = list(TABLE_6_6) + (["stm_extra", "combined_extra"] if settings["extra_stm"] else [])
    key = Store.key(settings, k, seed, len(melodies), sum(map(len, melodies)))
    return {row: summarise(store.log_probs(f"{tag}-ppm-{key}/{row}", lambda row=row: compute(row))
                           if store else compute(row), seed, n_boot) for row in rows}


class CorpusPPM(PPM):
    """PPM* (unbounded order in its context choice) whose trie keeps contexts of at most
    ``max_context`` symbols, so that a pre-training corpus of 800,000 notes fits in memory (a
    node per distinct substring: unbounded, about as many nodes as the corpus's notes squared
    over its melodies). The cap changes a prediction only where a context of ``max_context``
    notes has been followed by two things or more: a longer one would then be PPM*'s choice where
    it matched (a deterministic context stays one when lengthened, so below that PPM*'s choice is
    the same). ``checkpoint`` and ``rollback`` undo everything counted in between (a fold's
    training melodies and its online updates), so one corpus trie serves every fold."""

    def __init__(self, alphabet, max_context: int, **settings):
        super().__init__(alphabet, order=None, **settings)
        if max_context < 1:
            raise ValueError(f"max_context must be >= 1, got {max_context}")
        self.max_context = int(max_context)
        self._journal: list | None = None

    def _count(self, active, sym):
        if self._journal is not None:
            for node in active:
                child = node.children.get(sym)
                self._journal.append((node, sym, None if child is None else (child.count, child.excluded_count)))
        return super()._count(active, sym)[-(self.max_context + 1):]

    def checkpoint(self) -> None:
        self._journal = []

    def rollback(self) -> None:
        """Back to the state at ``checkpoint``, exactly (nodes created since are removed)."""
        for node, sym, before in reversed(self._journal or []):
            if before is None:
                del node.children[sym]
            else:
                node.children[sym].count, node.children[sym].excluded_count = before
        self._journal = None


#: The pre-trained PPM* rows (``ppm_pretrained``): key in the result -> the model in the thesis's notation.
PPM_PRETRAINED = {"ltm": "PPM* LTM C*I", "ltm_plus": "PPM* LTM+ C*I", "combined": "PPM* LTM+ C*I with STM C*I"}


def ppm_pretrained_log_probs(data: dict[str, list[list[int]]], corpus: list[list[int]], ppm: dict[str, Any],
                             max_context: int, k: int = 10, seed: int = 0) -> dict[str, dict[str, list[np.ndarray]]]:
    """Table 6.6's long-term models given the networks' pre-training ``corpus`` too: per dataset of
    ``data`` and fold (``folds(n, k, seed)``, the other rows' folds), PPM* C*I (``CorpusPPM``)
    trained on the corpus and the other folds (``ltm``), the same updated online with each test
    note after predicting it (``ltm_plus``, kept across the fold's melodies as in ``ppm_log_probs``),
    and that combined with the short-term model of the melody so far (``combined``, bias
    ``ppm["bias"]``). The trie is over the pitches of the corpus and the datasets; each
    distribution is renormalised over the dataset's own alphabet (as the networks' are) before it
    is scored or combined. Natural-log probability of every note: dataset -> row -> per melody."""
    settings = {key: ppm[key] for key in ("escape", "exclusion", "update_exclusion")}
    alphabet = sorted({p for m in corpus for p in m} | {p for ms in data.values() for m in ms for p in m})
    t0 = time.perf_counter()
    model = CorpusPPM(alphabet, max_context, **settings).fit(corpus)
    log.info("PPM* on the pre-training corpus (%d melodies, contexts up to %d notes): %.0f s", len(corpus),
             max_context, time.perf_counter() - t0)
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for ds, melodies in data.items():
        own = sorted({p for m in melodies for p in m})
        cols = [alphabet.index(p) for p in own]

        def restrict(d: np.ndarray, cols: list[int] = cols) -> np.ndarray:
            d = d[:, cols]
            return d / d.sum(1, keepdims=True)

        rows: dict[str, list[np.ndarray]] = {r: [np.zeros(0)] * len(melodies) for r in PPM_PRETRAINED}
        for test in folds(len(melodies), k, seed):
            model.checkpoint()
            model.fit([melodies[i] for i in np.setdiff1d(np.arange(len(melodies)), test)])
            fixed = {i: restrict(model.predict_sequence(melodies[i], learn=False)) for i in test}
            online = {i: restrict(model.predict_sequence(melodies[i], learn=True)) for i in test}
            model.rollback()
            for i in test:
                m = melodies[i]
                dists = {"ltm": fixed[i], "ltm_plus": online[i],
                         "combined": combine([online[i], stm_dists(m, own, ppm)], ppm["bias"])}
                col = [own.index(p) for p in m]
                for r in rows:
                    rows[r][i] = np.log(dists[r][np.arange(len(m)), col])
        out[ds] = rows
    return out


def ppm_pretrained_rows(data: dict[str, list[list[int]]], corpus: list[list[int]], ppm: dict[str, Any],
                        max_context: int, store: Store | None, label: str, k: int = 10, seed: int = 0,
                        n_boot: int = 1000) -> dict[str, dict[str, Any]]:
    """``ppm_pretrained_log_probs`` summarised: row name (``<model>, <label>``) -> ``{"sees",
    "corpus", dataset: summary}``; with a ``store``, each dataset's rows are kept under a name
    derived from the settings and the corpus (computed once, reused on resume)."""
    settings = {key: ppm[key] for key in ("escape", "exclusion", "update_exclusion", "bias")}
    done: dict[str, dict[str, list[np.ndarray]]] = {}

    def compute(ds: str, row: str) -> list[np.ndarray]:
        if not done:
            done.update(ppm_pretrained_log_probs(data, corpus, ppm, max_context, k, seed))
        return done[ds][row]

    ckey = corpus_key(corpus)
    out: dict[str, dict[str, Any]] = {}
    for row, model in PPM_PRETRAINED.items():
        name = f"{model}, {label}"
        out[name] = {"sees": SEES["pre"] if row == "ltm" else SEES["pre_dynamic"], "ppm_row": row}
        for ds, melodies in data.items():
            key = Store.key(settings, max_context, k, seed, len(melodies), sum(map(len, melodies)), ckey)
            lps = (store.log_probs(f"{ds}-ppm-pretrained-{key}/{row}", lambda ds=ds, row=row: compute(ds, row))
                   if store else compute(ds, row))
            out[name][ds] = summarise(lps, seed, n_boot)
    return out


def reproduction(ppm: dict[str, dict[str, Any]], tolerance: float) -> dict[str, dict[str, Any]]:
    """Each reproduced row of Table 6.6 against the thesis: per dataset ours, theirs, and whether
    they agree within ``tolerance`` bits (mean over melodies)."""
    out = {}
    for row, (_, *thesis) in TABLE_6_6.items():
        out[row] = {ds: {"ours": ppm[ds][row]["per_melody"], "thesis": t,
                         "holds": abs(ppm[ds][row]["per_melody"] - t) <= tolerance}
                    for ds, t in zip(("chorales", "kinder"), thesis)}
    return out


def paired_against_ppm(rows: dict[str, dict[str, dict]], ppm: dict[str, dict[str, Any]],
                       holds: dict[str, dict[str, Any]], fold_only: set[str], n_boot: int = 1000,
                       seed: int = 0) -> dict[str, dict[str, dict | None]]:
    """For each row (name -> dataset -> summary) and dataset: its difference from the reproduced
    combined model, and for the fold-only rows from the reproduced long-term model, melody by
    melody (row minus reference, bits per note, mean over melodies) with the paired interval of
    ``paired_difference`` (a row scored with several training seeds, ``melody_bits_by_seed``: of
    ``seed_piece_interval`` over seeds and melodies); only where that reproduction holds (``None``
    where it does not)."""
    out: dict[str, dict[str, dict | None]] = {}
    for name, by_ds in rows.items():
        refs = ["combined"] + (["ltm"] if name in fold_only else [])
        out[name] = {}
        for ds, r in by_ds.items():
            out[name][ds] = {}
            for ref in refs:
                if not holds[ref][ds]["holds"]:
                    out[name][ds][ref] = None
                    continue
                b = np.asarray(ppm[ds][ref]["melody_bits"])
                if "melody_bits_by_seed" in r:  # several training seeds: the two-level interval
                    d = np.asarray(r["melody_bits_by_seed"]) - b[None]
                    out[name][ds][ref] = seed_piece_interval(d, np.ones_like(b), n_boot=n_boot, seed=seed)
                else:
                    a = np.asarray(r["melody_bits"])
                    out[name][ds][ref] = paired_difference(a, b, np.ones_like(a), n_boot=n_boot, seed=seed)
    return out


def ppm_pretrained_result(data: dict[str, list[list[int]]], corpora: dict, variants: dict, ppm: dict, pre: dict,
                          store: Store, cfg: DictConfig) -> dict[str, Any]:
    """The pre-trained PPM* rows (``ppm_pretrained_rows``) on the pre-training corpus and, with
    ``ppm_pretrained.variants``, on each variant's corpus."""
    which = {"main": (corpora["main"], "pre-training corpus and training folds")}
    if pre.get("variants"):
        which.update({v: (c, f"pre-training corpus ({variants['variants'][v]['name']}) and training folds")
                      for v, c in corpora["variants"].items()})
    rows: dict[str, dict] = {}
    for cid, (corpus, label) in which.items():
        got = ppm_pretrained_rows({ds: data[ds] for ds in ("chorales", "kinder")}, corpus, ppm,
                                  int(pre["max_context"]), store, label, k=cfg.folds, seed=cfg.seed, n_boot=cfg.n_boot)
        main_label = which["main"][1]
        rows.update({row: {**r, "corpus": cid, **({"base": row.replace(label, main_label)} if cid != "main" else {})}
                     for row, r in got.items()})
    return {"max_context": int(pre["max_context"]), "rows": rows}


def _by_seed(r: dict) -> np.ndarray:
    return np.asarray(r["melody_bits_by_seed"] if "melody_bits_by_seed" in r else [r["melody_bits"]])


def paired_pretrained(rows: dict[str, dict], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Rows that saw a pre-training corpus, melody by melody, seed-aware (``seed_piece_interval``):
    - ``against_ppm``: each network row minus the PPM* rows pre-trained on the same corpus (its
      combined model; and for a row that does not learn from the test melody, its LTM);
    - ``moves``: each row on a variant's corpus minus the same row on the pre-training corpus
      (a network row on the training seeds both ran).
    A row's ``corpus`` says which corpus (``main`` or the variant); a PPM* row has ``ppm_row``."""
    ppm = {(r["corpus"], r["ppm_row"]): r for r in rows.values() if "ppm_row" in r}
    main = {r.get("base", name): r for name, r in rows.items() if r.get("corpus") == "main"}

    def diff(a: dict, b: dict, ds: str) -> dict | None:
        if ds not in a or ds not in b:
            return None
        x, y = _by_seed(a[ds]), _by_seed(b[ds])
        if "ppm_row" not in a and "ppm_row" not in b:  # two network rows: on the seeds both ran
            sa, sb = a.get("seed_values") or [], b.get("seed_values") or []
            both = [s for s in sa if s in sb]
            if not both:
                return None
            x, y = x[[sa.index(s) for s in both]], y[[sb.index(s) for s in both]]
        d = x - y.mean(0)[None] if len(y) != len(x) else x - y
        return seed_piece_interval(d, np.ones(d.shape[1]), n_boot=n_boot, seed=seed)

    against, moves = {}, {}
    for name, r in rows.items():
        cid = r.get("corpus")
        if cid is None:
            continue
        if "ppm_row" not in r:
            refs = ["combined"] + ([] if LEARNS in r["sees"] else ["ltm"])
            against[name] = {ds: {ref: diff(r, ppm[(cid, ref)], ds) if (cid, ref) in ppm else None for ref in refs}
                             for ds in ("chorales", "kinder") if ds in r}
        if cid != "main":
            base = main.get(r.get("base", name))
            if base is not None:
                moves[name] = {"base": r.get("base", name), **{ds: diff(r, base, ds) for ds in ("chorales", "kinder")
                                                                if ds in r}}
    return {"against_ppm": against, "moves": moves}
