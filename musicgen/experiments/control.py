"""Measuring control (``musicgen control ckpt_path=<run>``, conf/control.yaml): how often samples
asked for one attribute value come out with it, against the same model asked nothing (chance) and
real test pieces read by the same readers (the ceiling). The feature itself:
``musicgen.control.conditioning``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
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
from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_text
from musicgen.metrics.statistics import wilson
from musicgen.runtime import hydra_main, pick_device


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


def _notes(score: symusic.Score) -> int:
    return sum(len(t.notes) for t in score.tracks)


def measure_control(model: str | Path | MusicModel, values: Mapping[str, Sequence[str]] | None = None,
                    n: int = 20, cfg_scale: float = 1.0, max_new_tokens: int = 256, seed: int = 0,
                    device: str = "cpu", test_pieces: int = 200, per_attribute: int = 6, style_pieces: int = 300,
                    constrained: bool = True, sampling: str | Mapping[str, Any] = "default") -> dict[str, Any]:
    """How often the samples of ``model`` (a run directory, a ``.ckpt`` or an exported directory,
    loaded on ``device``; or a ``MusicModel``) asked for one attribute value (the others null) come
    out with it: ``n`` samples per value of ``values`` (attribute -> values; an empty list: the
    ``per_attribute`` most common values of the training pieces, ``other`` left out; None: every
    attribute the run conditions on). Samples are drawn as ``musicgen.generate`` draws them with ``sampling`` (a
    preset of ``conf/sampling/`` by name, or its settings; default: ``generate``'s defaults, the
    grammar mask included; ``constrained=False``: without the mask).

    The value a sample has is read from its decoded notes: key by ``estimate_key``; metre from the
    bars it writes (its first time signature); tempo from its first tempo; density from its notes
    per bar; style by a ``StyleClassifier`` fitted on up to ``style_pieces`` training pieces per
    style. Two references: ``n`` samples asked nothing (the all-null prefix), scored against each
    requested value (the chance level of this model), and up to ``test_pieces`` real test pieces
    decoded from their tokens as the samples are, the same readers against their attributes (what
    the readers get right on real music: the ceiling), read on the whole piece (``real``) and on
    its first ``max_new_tokens`` tokens (``real_excerpt``: the samples' length, a ceiling a sample
    of that length can reach; with ``key_source=notes`` the whole-piece reading is the label
    itself). Proportions with 95% Wilson intervals; the median token length of the samples and of
    the real pieces in ``lengths``."""
    preset = sampling_of(sampling, None)  # a preset of conf/sampling (an unknown one: a one-line error)
    sampler = dataclasses.replace(preset, constrained=constrained)
    m = model if isinstance(model, MusicModel) else MusicModel.load(model, device)
    run, vocab, ckpt_path = m.run, m.conditioning, m.ckpt_path
    if vocab is None:
        raise ConfigError(f"{ckpt_path}: not trained with conditioning (conditioning=key or full)")
    values = {a: list(v) for a, v in (values or {a: [] for a in vocab.attributes}).items()}
    unknown = [a for a in values if a not in vocab.attributes]
    if unknown:
        raise ConfigError(f"{ckpt_path} conditions on {list(vocab.attributes)}, not {unknown}")
    for attr, vals in values.items():
        bad = [v for v in vals if v not in vocab.values[attr]]
        if bad:
            raise ConfigError(f"{attr} values {bad} are unknown to this checkpoint; known: {list(vocab.values[attr])}")
    cache = load_run_cache(run)
    decode = run.tokenizer.decode
    train, test = cache.splits["train"], cache.splits.get("test")
    train_idx = train.originals()
    train_attrs = run.piece_attributes(train, train_idx)
    for attr in values:
        if not values[attr]:
            counts: dict[str, int] = {}
            for a in train_attrs:
                if a[attr] != "other":
                    counts[a[attr]] = counts.get(a[attr], 0) + 1
            values[attr] = sorted(counts, key=lambda v: -counts[v])[:per_attribute]
    readers: dict[str, Any] = {"key": estimate_key, "metre": metre_of, "tempo": tempo_of, "density": density_of}
    if "style" in values:
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

    def read(attr: str, scores: Sequence[symusic.Score | None]) -> list[str | None]:
        return [readers[attr](sc) if sc is not None else None for sc in scores]

    result: dict[str, Any] = {"ckpt_path": str(run.ckpt_path), "cfg_scale": cfg_scale, "n_per_value": n,
                              "constrained": m.grammar(sampler) is not None,
                              "sampling": asdict(sampler),
                              "max_new_tokens": max_new_tokens, "attributes": {}}
    sample_lengths: list[int] = []
    uncond = samples(None, 1.0)
    real_scores, real_excerpts, real_attrs, real_lengths = [], [], [], []
    if test is not None and len(test.originals()):
        idx = test.originals()[:test_pieces]
        real_attrs = run.piece_attributes(test, idx)
        docs = [test.doc(i).tolist() for i in idx]  # BOS ids EOS
        real_lengths = [len(d) - 2 for d in docs]
        real_scores = [decode(d) for d in docs]
        real_excerpts = [decode(d[: 1 + max_new_tokens]) for d in docs]
    for attr, vals in values.items():
        got_uncond = read(attr, uncond)
        row: dict[str, Any] = {"values": list(vals), "per_value": {}}
        k_all = n_all = k_base = 0
        for v in vals:
            got = read(attr, samples({attr: v}, cfg_scale))
            k = sum(g == v for g in got)
            row["per_value"][v] = {**_share(k, len(got)), "read": {g or "no notes": got.count(g) for g in set(got)}}
            k_all, n_all, k_base = k_all + k, n_all + len(got), k_base + sum(g == v for g in got_uncond)
        row["conditioned"] = _share(k_all, n_all)
        row["unconditioned"] = _share(k_base, len(uncond) * len(vals))  # chance: asked nothing
        for name, real in (("real", real_scores), ("real_excerpt", real_excerpts)):
            if real:
                pairs = [(readers[attr](sc), a[attr]) for sc, a in zip(real, real_attrs) if _notes(sc)]
                row[name] = _share(sum(r == label for r, label in pairs), len(pairs))
        result["attributes"][attr] = row
    result["lengths"] = {"samples_median": float(np.median(sample_lengths)),
                         "real_median": float(np.median(real_lengths)) if real_lengths else None}
    return result


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


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """One line per attribute: the share asked for, asked nothing, and of the real pieces."""
    lines = []
    for attr, row in result["attributes"].items():
        real, excerpt = (row.get(k, {}).get("share", float("nan")) for k in ("real", "real_excerpt"))
        lines.append(f"{attr:8s} asked {row['conditioned']['share']:.1%} {row['conditioned']['ci95']}  "
                     f"asked nothing {row['unconditioned']['share']:.1%}  real {real:.1%}  "
                     f"real, first {result['max_new_tokens']} tokens {excerpt:.1%}")
    return lines


def run(cfg: DictConfig) -> dict[str, Any]:
    """The measurement conf/control.yaml describes, written as JSON to ``cfg.out`` (null: the run
    directory's ``control.json``); the result, with ``out`` (where it went) added."""
    values = requested_values(cfg)
    sampling = OmegaConf.to_container(cfg.sampling)
    sampling_of(sampling, None)  # bad sampling settings fail before the run loads
    m = MusicModel.load(cfg.ckpt_path, pick_device(cfg.device))
    result = measure_control(m, values, cfg.n, cfg.cfg_scale, cfg.max_new_tokens, cfg.seed,
                             constrained=bool(sampling.get("constrained", True)), sampling=sampling)
    out = Path(cfg.out) if cfg.out else m.run_dir / "control.json"
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return {**result, "out": str(out)}


@hydra_main("control")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print("\n".join(summary_lines(result)))
    print(f"written to {result['out']}")


if __name__ == "__main__":
    main()
