"""Measuring control (``musicgen control ckpt_path=<run>``, conf/control.yaml): how often samples
asked for one attribute value come out with it, read by readers that did not make the training
labels (``musicgen.control.readers``), against the same model asked nothing (chance, fresh samples
for every value) and real test pieces read by the same readers (the ceiling); over several runs
trained with different seeds, the mean with a t interval over seeds. A run whose result is
already in the output file, measured with the same settings, is reused, not sampled again
(``reuse=false``: measure anew). ``publish=true`` writes the result as a page of the docs site
(``musicgen.publish``). The feature itself: ``musicgen.control.conditioning``."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
from omegaconf import DictConfig, OmegaConf

from musicgen.api import MusicModel, sampling_of
from musicgen.checkpoint import load_run_cache
from musicgen.control.attributes import density_of, estimate_key, metre_of, tempo_of
from musicgen.control.readers import METRE_LEVELS, key_of, metre_from_notes
from musicgen.errors import ConfigError
from musicgen.experiments.seeds import train_seeds
from musicgen.fs import atomic_write_text
from musicgen.metrics.statistics import seed_piece_interval, wilson
from musicgen.publish import publish, results_dir
from musicgen.runtime import hydra_main, pick_device

log = logging.getLogger(__name__)

#: Attribute -> the reader of a sample's value: key and metre by readers that did not make the
#: labels, tempo from the tempo the file plays at (the event is the attribute), density from notes
#: per bar. Style's reader, a ``StyleClassifier``, is fitted per run.
READERS: dict[str, Any] = {"key": key_of, "metre": metre_from_notes, "tempo": tempo_of, "density": density_of}

#: Attribute -> how the labels were made, read on the samples (a secondary column, ``labeller_reading``):
#: a hit there is the labeller agreeing with itself (key) or a time-signature token copied (metre).
LABELLER_READERS: dict[str, Any] = {"key": estimate_key, "metre": metre_of}

#: ``measure_control``'s defaults for what ``musicgen control`` does not set: real test pieces read
#: for the ceiling, most common values asked for an attribute given none, training pieces per style
#: for the style reader.
TEST_PIECES, PER_ATTRIBUTE, STYLE_PIECES = 200, 6, 300


def _names(readers: Mapping[str, Any]) -> dict[str, str]:
    return {a: f"{r.__module__}.{r.__qualname__}" for a, r in readers.items()}


def _share(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"matches": k, "n": n, "share": k / n if n else float("nan"), "ci95": [round(lo, 4), round(hi, 4)]}


class StyleClassifier:
    """Nearest centroid over tokeniser-independent features (the normalised interval, duration,
    inter-onset and notes-per-bar histograms of ``musicgen.metrics.features``, standardised on the
    training pieces): which collection a piece sounds like. Pitch classes are left out, so a
    transposed piece keeps its style."""

    HISTS = ("interval", "duration", "ioi", "notes_per_bar")

    def __init__(self, scores: Sequence[symusic.Score], styles: Sequence[str]) -> None:
        x = np.stack([self.features(s) for s in scores])
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - self.mean) / self.std
        self.styles = tuple(sorted(set(styles)))
        labels = np.array([self.styles.index(s) for s in styles])
        self.centroids = np.stack([z[labels == i].mean(axis=0) for i in range(len(self.styles))])

    @classmethod
    def features(cls, score: symusic.Score) -> np.ndarray:
        from musicgen.metrics.features import piece_features

        f = piece_features(score)
        return np.concatenate([f[h] / max(1, f[h].sum()) for h in cls.HISTS])

    def predict(self, score: symusic.Score) -> str:
        z = (self.features(score) - self.mean) / self.std
        return self.styles[int(np.argmin(((self.centroids - z) ** 2).sum(axis=1)))]


def _count(hits: dict[str, list[int]], name: str, got: Sequence[str | None], value: str) -> dict[str, Any]:
    """The share of ``got`` that read ``value``, added to the running total ``hits[name]``."""
    k = sum(g == value for g in got)
    hits[name][0] += k
    hits[name][1] += len(got)
    return _share(k, len(got))


def _notes(score: symusic.Score) -> int:
    return sum(len(t.notes) for t in score.tracks)


def measure_control(model: str | Path | MusicModel, values: Mapping[str, Sequence[str]] | None = None,
                    n: int = 20, cfg_scale: float = 1.0, max_new_tokens: int = 256, seed: int = 0,
                    device: str = "cpu", test_pieces: int = TEST_PIECES, per_attribute: int = PER_ATTRIBUTE,
                    style_pieces: int = STYLE_PIECES,
                    constrained: bool = True, sampling: str | Mapping[str, Any] = "default") -> dict[str, Any]:
    """How often the samples of ``model`` (a run directory, a ``.ckpt`` or an exported directory,
    loaded on ``device``; or a ``MusicModel``) asked for one attribute value (the others null) come
    out with it: ``n`` samples per value of ``values`` (attribute -> values; an empty list: the
    ``per_attribute`` most common values of the training pieces, ``other`` left out; None: every
    attribute the run conditions on). Samples are drawn as ``musicgen.generate`` draws them with ``sampling`` (a
    preset of ``conf/sampling/`` by name, or its settings; default: ``generate``'s defaults, the
    grammar mask included; ``constrained=False``: without the mask).

    The value a sample has is read from its decoded notes by a reader that did not make the
    training labels (``READERS``): key by ``readers.key_of`` (Temperley-Kostka-Payne profiles; the
    labels come from Krumhansl-Kessler's or the key signature); metre by ``readers.metre_from_notes``
    (the onsets, never the time-signature events); tempo from its first tempo (the tempo the file
    plays at is the attribute); density from its notes per bar; style by a ``StyleClassifier``
    fitted on up to ``style_pieces`` training pieces per style. ``labeller_reading``: the same
    samples read as the labels were made (``LABELLER_READERS``: ``estimate_key``, the first
    TimeSig token), a secondary column only.

    Chance: for each value, ``n`` fresh samples asked nothing (the all-null prefix), read against
    that value, so chance has the same ``n`` as the value's row and its interval counts independent
    samples (the j-th value of every attribute shares its batch; rows of one attribute never do).
    The ceiling: up to ``test_pieces`` real test pieces decoded from their tokens as the samples
    are, the same readers against their labels, read on the whole piece (``real``) and on its first
    ``max_new_tokens`` tokens (``real_excerpt``: the samples' length); for metre only the pieces
    labelled with a metre the reader chooses among (``other`` left out). Proportions with 95%
    Wilson intervals; the median token length of the samples and of the real pieces in
    ``lengths``."""
    preset = sampling_of(sampling, None)  # a preset of conf/sampling (an unknown one: a one-line error)
    sampler = dataclasses.replace(preset, constrained=constrained)
    m = model if isinstance(model, MusicModel) else MusicModel.load(model, device)
    run = m.run
    cache = _conditioned_cache(m)
    decode = run.tokenizer.decode
    train, test = cache.splits["train"], cache.splits.get("test")
    train_idx = train.originals()
    train_attributes = functools.cache(lambda: run.piece_attributes(train, train_idx))
    values = _asked_values(m, values, per_attribute, train_attributes)
    readers = dict(READERS)
    if "style" in values:
        train_attrs = train_attributes()
        rng = np.random.default_rng(seed)
        chosen = [int(j) for st in sorted({a["style"] for a in train_attrs})
                  for j in rng.permutation([j for j, a in enumerate(train_attrs) if a["style"] == st])[:style_pieces]]
        scores = [decode(train.doc(train_idx[j]).tolist()) for j in chosen]
        keep = [k for k, sc in enumerate(scores) if _notes(sc)]
        styles = [train_attrs[chosen[k]]["style"] for k in keep]
        readers["style"] = StyleClassifier([scores[k] for k in keep], styles).predict
    gen = torch.Generator(device=m.device).manual_seed(seed)

    def samples(cond: Mapping[str, str] | None, scale: float) -> list[symusic.Score | None]:
        pieces = m.generate(n, cond=cond, cfg_scale=scale, sampling=sampler, generator=gen,
                            max_new_tokens=max_new_tokens)
        scores = []
        for p in pieces:
            sample_lengths.append(len(p.ids))
            score = decode(p.ids)
            scores.append(score if _notes(score) else None)
        return scores

    def read(reader: Any, scores: Sequence[symusic.Score | None]) -> list[str | None]:
        return [reader(sc) if sc is not None else None for sc in scores]

    result: dict[str, Any] = {"ckpt_path": str(run.ckpt_path), "cfg_scale": cfg_scale, "n_per_value": n,
                              "constrained": m.grammar(sampler) is not None,
                              "sampling": asdict(sampler), "max_new_tokens": max_new_tokens,
                              "seed": seed, "test_pieces": test_pieces, "style_pieces": style_pieces,
                              "readers": _names(READERS), "labeller_readers": _names(LABELLER_READERS),
                              "attributes": {}}
    sample_lengths: list[int] = []
    uncond_batches: list[list[symusic.Score | None]] = []  # batch j: chance of every attribute's j-th value
    real_scores, real_excerpts, real_attrs, real_lengths = [], [], [], []
    if test is not None and len(test.originals()):
        idx = test.originals()[:test_pieces]
        real_attrs = run.piece_attributes(test, idx)
        docs = [test.doc(i).tolist() for i in idx]  # BOS ids EOS
        real_lengths = [len(d) - 2 for d in docs]
        real_scores = [decode(d) for d in docs]
        real_excerpts = [decode(d[: 1 + max_new_tokens]) for d in docs]
    for attr, vals in values.items():
        labeller = LABELLER_READERS.get(attr)
        row: dict[str, Any] = {"values": list(vals), "per_value": {}}
        hits = {"conditioned": [0, 0], "unconditioned": [0, 0], "labeller_conditioned": [0, 0],
                "labeller_unconditioned": [0, 0]}
        count = functools.partial(_count, hits)
        for j, v in enumerate(vals):
            if j == len(uncond_batches):
                uncond_batches.append(samples(None, 1.0))
            asked, chance = samples({attr: v}, cfg_scale), uncond_batches[j]
            got = read(readers[attr], asked)
            cell = {**count("conditioned", got, v), "read": {g or "no notes": got.count(g) for g in set(got)},
                    "chance": count("unconditioned", read(readers[attr], chance), v)}
            if labeller is not None:
                cell["labeller_reading"] = {"conditioned": count("labeller_conditioned", read(labeller, asked), v),
                                            "unconditioned": count("labeller_unconditioned", read(labeller, chance), v)}
            row["per_value"][v] = cell
        row["conditioned"] = _share(*hits["conditioned"])
        row["unconditioned"] = _share(*hits["unconditioned"])  # chance: fresh samples asked nothing
        if labeller is not None:
            row["labeller_reading"] = {"conditioned": _share(*hits["labeller_conditioned"]),
                                       "unconditioned": _share(*hits["labeller_unconditioned"])}
        for name, real in (("real", real_scores), ("real_excerpt", real_excerpts)):
            if real:
                pairs = [(readers[attr](sc), a[attr]) for sc, a in zip(real, real_attrs)
                         if _notes(sc) and (attr != "metre" or a[attr] in METRE_LEVELS)]
                row[name] = _share(sum(r == label for r, label in pairs), len(pairs))
        result["attributes"][attr] = row
    result["lengths"] = {"samples_median": float(np.median(sample_lengths)),
                         "real_median": float(np.median(real_lengths)) if real_lengths else None}
    return result


def _conditioned_cache(m: MusicModel):
    """The token cache of ``m``'s run; a one-line error where the run is not conditioned."""
    if m.conditioning is None:
        raise ConfigError(f"{m.ckpt_path}: not trained with conditioning (conditioning=key or full)")
    return load_run_cache(m.run)


def _asked_values(m: MusicModel, values: Mapping[str, Sequence[str]] | None, per_attribute: int,
                  train_attributes: Callable[[], list[dict[str, str]]]) -> dict[str, list[str]]:
    """``values`` checked against ``m``'s conditioning vocabulary, an attribute given no values
    filled with its ``per_attribute`` most common values in ``train_attributes()`` (``other`` left
    out; read only where needed); None: every attribute ``m`` conditions on."""
    vocab, ckpt_path = m.conditioning, m.ckpt_path
    assert vocab is not None  # _conditioned_cache said so
    values = {a: list(v) for a, v in (values or {a: [] for a in vocab.attributes}).items()}
    unknown = [a for a in values if a not in vocab.attributes]
    if unknown:
        raise ConfigError(f"{ckpt_path} conditions on {list(vocab.attributes)}, not {unknown}")
    for attr, vals in values.items():
        bad = [v for v in vals if v not in vocab.values[attr]]
        if bad:
            raise ConfigError(f"{attr} values {bad} are unknown to this checkpoint; known: {list(vocab.values[attr])}")
    for attr in values:
        if not values[attr]:
            counts: dict[str, int] = {}
            for a in train_attributes():
                if a[attr] != "other":
                    counts[a[attr]] = counts.get(a[attr], 0) + 1
            values[attr] = sorted(counts, key=lambda v: -counts[v])[:per_attribute]
    return values


def measured_settings(result: Mapping[str, Any]) -> dict[str, Any]:
    """What one run's ``measure_control`` result was measured under: its checkpoint aside, two
    results with the same settings are the same result (the sampling seed fixes every sample, on
    one machine and torch). A result written before the sampling seed, ``test_pieces`` and
    ``style_pieces`` were recorded in it (2026-12-06) is read with ``musicgen control``'s values of
    that time: 200 and 300 (the command line could not set them) and ``seed`` 0 (conf/control.yaml's
    default; a ``seed=`` override of that time is recorded nowhere, so it is taken as 0)."""
    return {"values": {a: list(row["values"]) for a, row in result["attributes"].items()},
            "n_per_value": result["n_per_value"], "cfg_scale": result["cfg_scale"],
            "max_new_tokens": result["max_new_tokens"], "sampling": result["sampling"],
            "seed": result.get("seed", 0), "test_pieces": result.get("test_pieces", TEST_PIECES),
            "style_pieces": result.get("style_pieces", STYLE_PIECES), "readers": result["readers"],
            "labeller_readers": result["labeller_readers"]}


def saved_result(saved: Path, m: MusicModel, values: Mapping[str, Sequence[str]] | None, n: int,
                 cfg_scale: float, max_new_tokens: int, seed: int,
                 sampling: str | Mapping[str, Any] = "default", constrained: bool = True) -> dict[str, Any] | None:
    """The result of ``m`` in ``saved`` (a file ``run`` wrote: one run's result, or ``{"runs": [...]}``)
    measured with the settings ``measure_control(m, values, n, cfg_scale, max_new_tokens, seed,
    sampling=sampling, constrained=constrained)`` would use (``measured_settings``), with
    ``musicgen control``'s defaults for the rest; None where there is none, or where the checkpoint
    was written after the file (trained again since)."""
    if not saved.is_file():
        return None
    try:
        data = json.loads(saved.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("%s is not a readable result (%s): measuring again; it will be replaced", saved, e)
        return None
    ckpt = Path(m.ckpt_path).resolve()
    if not ckpt.is_file() or ckpt.stat().st_mtime > saved.stat().st_mtime:
        return None
    runs = data.get("runs", [data]) if isinstance(data, dict) else []
    candidates = [r for r in runs if isinstance(r, dict) and "attributes" in r
                  and Path(str(r.get("ckpt_path", ""))).resolve() == ckpt]
    if not candidates or m.conditioning is None:
        return None
    cache = _conditioned_cache(m)
    train = cache.splits["train"]
    asked = _asked_values(m, values, PER_ATTRIBUTE, lambda: m.run.piece_attributes(train, train.originals()))
    sampler = dataclasses.replace(sampling_of(sampling, None), constrained=constrained)
    wanted = {"values": asked, "n_per_value": n, "cfg_scale": cfg_scale, "max_new_tokens": max_new_tokens,
              "sampling": asdict(sampler), "seed": seed, "test_pieces": TEST_PIECES, "style_pieces": STYLE_PIECES,
              "readers": _names(READERS), "labeller_readers": _names(LABELLER_READERS)}
    for r in candidates:
        try:
            if measured_settings(r) == wanted:
                return r
        except KeyError:  # not a result this module wrote
            continue
    return None


def over_seeds(results: Sequence[Mapping[str, Any]], level: float = 0.95) -> dict[str, Any]:
    """Per attribute, the share asked for and asked nothing of each run (``results``, one per training
    seed, from ``measure_control`` with the same values), their mean and the t interval over seeds
    (``seed_piece_interval`` on the per-seed shares: S - 1 degrees of freedom, so it covers what
    another seed would give; each seed's samples are its own, so no piece part), and the spread
    (lowest, highest). One run: no interval."""
    out: dict[str, Any] = {}
    for attr in results[0]["attributes"]:
        rows = [r["attributes"][attr] for r in results]
        if any(row["values"] != rows[0]["values"] for row in rows):
            raise ConfigError(f"{attr}: the runs were asked different values; pass values.{attr}=[...] explicitly")
        cell: dict[str, Any] = {}
        for name in ("conditioned", "unconditioned"):
            shares = [row[name]["share"] for row in rows]
            ci = seed_piece_interval([[x] for x in shares], 1.0, level) if len(shares) > 1 else None
            cell[name] = {"per_seed": shares, "mean": float(np.mean(shares)),
                          "ci95": [round(ci["low"], 4), round(ci["high"], 4)] if ci else None,
                          "spread": [min(shares), max(shares)]}
        out[attr] = cell
    return out


def requested_values(cfg: DictConfig) -> dict[str, list[str]] | None:
    """conf/control.yaml's ``attributes`` and ``values`` as ``measure_control``'s ``values``: every
    attribute named in either (null in ``values``: not named), with the values given (an empty
    list: the most common ones); None (every attribute the run conditions on) when neither names
    one. A single name is taken as a list of one."""
    attributes, values = cfg.attributes, cfg["values"]  # cfg.values would be DictConfig.values()
    asked: dict[str, list[str]] = {}
    for attr, vals in (values or {}).items():
        if vals is not None:
            asked[str(attr)] = [vals] if isinstance(vals, str) else [str(v) for v in vals]
    for attr in [attributes] if isinstance(attributes, str) else attributes or []:
        asked.setdefault(str(attr), [])
    return asked or None


def _pct(interval) -> str:
    """``[68.0%, 77.3%]`` from a (low, high) pair of shares."""
    return f"[{interval[0]:.1%}, {interval[1]:.1%}]"


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """One line per attribute: the share asked for, asked nothing, and of the real pieces (one run);
    over seeds, one line per attribute with the mean, its t interval and each seed's share."""
    if "seeds" in result:
        lines = []
        for attr, c in result["seeds"].items():
            each = ", ".join(f"{x:.1%}" for x in c["conditioned"]["per_seed"])
            lines.append(f"{attr:8s} asked {c['conditioned']['mean']:.1%} {_pct(c['conditioned']['ci95'])} over "
                         f"{len(c['conditioned']['per_seed'])} seeds (each {each})  asked nothing "
                         f"{c['unconditioned']['mean']:.1%} {_pct(c['unconditioned']['ci95'])}")
        return lines
    lines = []
    for attr, row in result["attributes"].items():
        real, excerpt = (row.get(k, {}).get("share", float("nan")) for k in ("real", "real_excerpt"))
        lines.append(f"{attr:8s} asked {row['conditioned']['share']:.1%} {_pct(row['conditioned']['ci95'])}  "
                     f"asked nothing {row['unconditioned']['share']:.1%} {_pct(row['unconditioned']['ci95'])}  "
                     f"reader on real {real:.1%}  real, first {result['max_new_tokens']} tokens {excerpt:.1%}")
    return lines


def _share_text(c: Mapping[str, Any]) -> str:
    """``72.5% [66.5, 77.8] (174/240)``: a share with its Wilson interval and counts."""
    return f"{c['share']:.1%} [{c['ci95'][0]:.1%}, {c['ci95'][1]:.1%}] ({c['matches']}/{c['n']})"


def _each(cells: Sequence[str]) -> str:
    """One text where every seed has the same (``... (each seed)``), else the seeds' in order."""
    return f"{cells[0]} (each seed)" if len(cells) > 1 and len(set(cells)) == 1 else "; ".join(cells)


def _read_as(per_value: Sequence[Mapping[str, Any]], value: str, top: int = 3) -> str:
    """What the samples asked for ``value`` were read as instead, pooled over ``per_value`` (one
    cell per run), most often first: ``C_major 41, F_major 19, E_minor 7``."""
    counts: dict[str, int] = {}
    for cell in per_value:
        for got, k in cell.get("read", {}).items():
            if got != value:
                counts[got] = counts.get(got, 0) + k
    order = sorted(counts, key=lambda g: (-counts[g], g))[:top]
    return ", ".join(f"{g} {counts[g]}" for g in order) or "-"


def control_markdown(result: Mapping[str, Any]) -> str:
    """``run``'s result (one run, or ``{"runs", "seeds"}`` over training seeds) as a Markdown page:
    per attribute the share of samples with the value asked for, of samples asked nothing (chance)
    and of real test pieces (the readers' ceiling), then per value, with what the misses were read as."""
    runs = list(result["runs"]) if "seeds" in result else [result]
    first, several = runs[0], len(runs) > 1
    sampling = ", ".join(f"{k}={v}" for k, v in first["sampling"].items())
    readers = ", ".join(f"{a}: `{r}`" for a, r in first["readers"].items() if a in first["attributes"])
    each = ", each seed's in seed order" if several else ""
    lines = [f"# Control over {len(runs)} training seeds" if several else "# Control: samples asked for a value", ""]
    lines.append((f"{len(runs)} runs of one setup, one per training seed: " if several else "Run ")
                 + ", ".join(f"`{r['ckpt_path']}`" for r in runs) + ". "
                 f"Per value asked for, {first['n_per_value']} samples asked for it (`cfg_scale={first['cfg_scale']}`) "
                 f"and {first['n_per_value']} fresh samples asked nothing (chance), {first['max_new_tokens']} tokens "
                 f"at most, sampling seed {first.get('seed', 0)}; sampling {sampling}. Each sample is read by a reader "
                 f"that did not make the training labels ({readers}); the ceiling is the same reader on the real test "
                 f"pieces against their labels, on the whole piece and on its first {first['max_new_tokens']} tokens. "
                 "Shares with 95% Wilson intervals and counts"
                 + ("; the mean over seeds with the 95% t interval over the seeds' shares, which covers what "
                    "another training seed would give." if several else "."))
    lines += ["", "| attribute | asked for | asked nothing (chance) | labeller's reading, asked for | "
              "reader on real test pieces (ceiling) | real, first tokens only |", "|---|---|---|---|---|---|"]
    for attr in first["attributes"]:
        rows = [r["attributes"][attr] for r in runs]
        cells = []
        for name in ("conditioned", "unconditioned"):
            text = _each([_share_text(row[name]) for row in rows])
            if several:
                c = result["seeds"][attr][name]
                ci = f" [{c['ci95'][0]:.1%}, {c['ci95'][1]:.1%}]" if c["ci95"] else ""
                text = f"**{c['mean']:.1%}**{ci} over seeds; each: {text}"
            cells.append(text)
        labeller = [_share_text(row["labeller_reading"]["conditioned"]) for row in rows if "labeller_reading" in row]
        label_text = _each(labeller) if labeller else "-"
        if len(set(labeller)) > 1:
            shares = [row["labeller_reading"]["conditioned"]["share"] for row in rows]
            label_text = f"mean {np.mean(shares):.1%}; each: {label_text}"
        real = [_each([_share_text(row[k]) for row in rows]) if all(k in row for row in rows) else "-"
                for k in ("real", "real_excerpt")]
        lines.append(f"| {attr} | {cells[0]} | {cells[1]} | {label_text} | {real[0]} | {real[1]} |")
    lines += ["", f"Per value{each}: the share of the samples asked for it that were read as it, the share of "
              "the samples asked nothing that were read as it (chance), and what the samples asked for it were "
              "read as instead" + (" (pooled over the seeds)" if several else "") + ", most often first.", "",
              "| attribute | value | asked for | asked nothing (chance) | read as instead |", "|---|---|---|---|---|"]
    for attr, row0 in first["attributes"].items():
        for v in row0["values"]:
            cells = [r["attributes"][attr]["per_value"][v] for r in runs]
            asked = "; ".join(f"{c['share']:.1%} ({c['matches']}/{c['n']})" for c in cells)
            chance = "; ".join(f"{c['chance']['share']:.1%} ({c['chance']['matches']}/{c['chance']['n']})"
                               for c in cells)
            lines.append(f"| {attr} | {v} | {asked} | {chance} | {_read_as(cells, v)} |")
    lengths = "; ".join(f"{r['lengths']['samples_median']:g}" for r in runs)
    real_median = first["lengths"].get("real_median")
    lines += ["", f"Median sample length{each}: {lengths} tokens"
              + (f"; real test pieces: {real_median:g}." if real_median is not None else ".")]
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig) -> dict[str, Any]:
    """The measurement conf/control.yaml describes, written as JSON to ``cfg.out``; the result, with
    ``out`` (where it went) added. One run (``ckpt_path`` a path): ``measure_control``'s result
    (``out`` null: the run directory's ``control.json``). Several (``ckpt_path`` a list of runs
    trained with different seeds, or ``train.seeds`` to train them first): ``{"runs": [each run's
    result], "seeds": over_seeds(...)}`` (``out`` null: ``control_seeds.json`` beside the first).
    ``reuse`` (default true): a run whose result ``out`` already holds, measured with the same
    settings (``saved_result``), is taken from there, not sampled again. ``publish``: also write
    ``docs/results/<publish_name>.md`` (``control_markdown``; ``publish_name`` null: ``control``, or
    ``control-seeds`` over several runs), with ``published`` (its path) added to the result."""
    values = requested_values(cfg)
    sampling = OmegaConf.to_container(cfg.sampling)
    sampling_of(sampling, None)  # bad sampling settings fail before the run loads
    if cfg.publish:
        results_dir(cfg.publish_dir)  # a missing docs directory fails before the work
    paths = [cfg.ckpt_path] if isinstance(cfg.ckpt_path, str) else list(cfg.ckpt_path or [])
    if cfg.train.seeds:
        if paths:
            raise ConfigError("give either ckpt_path (runs trained already) or train.seeds (runs to train), not both")
        if not cfg.train.overrides:
            raise ConfigError("train.seeds needs train.overrides, e.g. \"train.overrides=['+version=v7',"
                              "'conditioning=key']\"")
        paths = [str(p) for p in train_seeds(list(cfg.train.overrides), list(cfg.train.seeds), cfg.train.dir)]
    if not paths:
        raise ConfigError("ckpt_path=<run> (or a list of runs trained with different seeds) is required")
    constrained = bool(sampling.get("constrained", True))
    results: list[dict[str, Any]] = []
    out: Path | None = None
    for path in paths:
        m = MusicModel.load(path, pick_device(cfg.device))
        if out is None:
            out = Path(cfg.out) if cfg.out else (m.run_dir / "control.json" if len(paths) == 1
                                                 else m.run_dir.parent / "control_seeds.json")
        saved = saved_result(out, m, values, cfg.n, cfg.cfg_scale, cfg.max_new_tokens, cfg.seed, sampling,
                             constrained) if cfg.reuse else None
        if saved is not None:
            log.info("%s: measured with the same settings in %s, reused (reuse=false measures again)",
                     m.ckpt_path, out)
            results.append(saved)
            continue
        results.append(measure_control(m, values, cfg.n, cfg.cfg_scale, cfg.max_new_tokens, cfg.seed,
                                       constrained=constrained, sampling=sampling))
    assert out is not None
    result = results[0] if len(results) == 1 else {"runs": results, "seeds": over_seeds(results)}
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    if cfg.publish:
        name = cfg.publish_name or ("control" if len(results) == 1 else "control-seeds")
        result = {**result, "published": str(publish(name, control_markdown(result), docs_dir=cfg.publish_dir))}
    return {**result, "out": str(out)}


@hydra_main("control")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print("\n".join(summary_lines(result)))
    print(f"written to {result['out']}")
    if "published" in result:
        print(f"published to {result['published']}")


if __name__ == "__main__":
    main()
