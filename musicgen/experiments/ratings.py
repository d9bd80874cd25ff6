"""Rankings of a listening study: ``musicgen ratings study=<name>``.

Reads the study's answers (``<study_dir>/answers.sqlite``, written by ``musicgen listen``), fits
a Bradley-Terry model to the contestants' comparisons with ``choix`` (a preference counts as a win,
"no preference" as half a win for each side), and bootstraps over listeners (a resampled study
draws whole listeners, with all their answers, so the interval holds the spread between people as
well as between pieces). Writes ``ratings.json``, ``ratings.md`` (the ranking table) and
``ratings.png`` (strengths with their intervals) into the study folder, and the answers as CSV and
Parquet beside them. Two contestants next to each other in the ranking whose difference's
interval includes zero are reported as not separated: the study needs more answers to tell them apart.

A strength is on the log-odds scale, centred (mean zero over the contestants): contestant i beats
j with probability ``1 / (1 + exp(s_j - s_i))``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from musicgen.data.preferences import PreferenceStore
from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_text
from musicgen.runtime import hydra_main

log = logging.getLogger(__name__)


def comparisons(rows: Sequence[Mapping[str, Any]], index: Mapping[str, int]) -> list[tuple[int, int]]:
    """``(winner, loser)`` pairs of contestant indices, each answer counted twice so that a tie can
    be half a win for each: a preference gives two wins, "no preference" one each way."""
    out = []
    for r in rows:
        a, b = index[r["left_contestant"]], index[r["right_contestant"]]
        if r["choice"] == "left":
            out += [(a, b), (a, b)]
        elif r["choice"] == "right":
            out += [(b, a), (b, a)]
        else:
            out += [(a, b), (b, a)]
    return out


def fit_strengths(n: int, data: Sequence[tuple[int, int]], alpha: float = 0.01) -> np.ndarray:
    """Bradley-Terry strengths (centred log-odds) of ``n`` contestants by choix's ILSR; ``alpha``, a
    small ridge, keeps a contestant that never won (or never played) finite."""
    import choix

    if not data:
        return np.zeros(n)
    s = choix.ilsr_pairwise(n, list(data), alpha=alpha)
    return s - s.mean()


def bradley_terry(rows: Sequence[Mapping[str, Any]], contestants: Sequence[str], n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0, alpha: float = 0.01, min_listeners: int = 5) -> dict[str, Any]:
    """The ranking of ``contestants`` from the answers ``rows`` (``PreferenceStore.answers_table``):
    each contestant's strength, its ``level`` percentile interval from ``n_boot`` resamples of the
    listeners, its wins, ties and losses; and, for each contestant and the next one down, the
    interval of their difference and whether it excludes zero (``separated``). With fewer than
    ``min_listeners`` listeners nothing is separated: a resample of two or three people takes a
    handful of values, and its percentiles are no interval."""
    names = list(contestants)
    index = {c: i for i, c in enumerate(names)}
    unknown = {r[k] for r in rows for k in ("left_contestant", "right_contestant")} - set(index)
    if unknown:
        raise ConfigError(f"answers name contestants not in the study: {sorted(unknown)}")
    strengths = fit_strengths(len(names), comparisons(rows, index), alpha)
    by_listener: dict[str, list] = {}
    for r in rows:
        by_listener.setdefault(r["listener"], []).append(r)
    listeners = sorted(by_listener)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(names)))
    for b in range(n_boot):
        drawn = rng.choice(len(listeners), size=len(listeners), replace=True) if listeners else []
        data = [c for i in drawn for c in comparisons(by_listener[listeners[i]], index)]
        boot[b] = fit_strengths(len(names), data, alpha)
    tails = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    order = [int(i) for i in np.argsort(-strengths, kind="stable")]
    table = []
    for rank, i in enumerate(order, 1):
        c = names[i]
        mine = [r for r in rows if c in (r["left_contestant"], r["right_contestant"])]
        won = sum(r["preferred_contestant"] == c for r in mine)
        ties = sum(r["choice"] == "none" for r in mine)
        lo, hi = np.percentile(boot[:, i], tails)
        table.append({"rank": rank, "contestant": c, "strength": float(strengths[i]), "low": float(lo),
                      "high": float(hi), "answers": len(mine), "wins": won, "ties": ties,
                      "losses": len(mine) - won - ties})
    gaps = []
    enough = len(listeners) >= min_listeners
    for i, j in zip(order, order[1:]):
        lo, hi = np.percentile(boot[:, i] - boot[:, j], tails)
        gaps.append({"above": names[i], "below": names[j], "difference": float(strengths[i] - strengths[j]),
                     "low": float(lo), "high": float(hi), "separated": bool(enough and lo > 0)})
    return {"answers": len(rows), "listeners": len(listeners), "min_listeners": min_listeners,
            "n_boot": n_boot, "level": level,
            "ranking": table, "adjacent": gaps,
            "not_separated": [f"{g['above']} and {g['below']}" for g in gaps if not g["separated"]]}


def ratings_markdown(result: Mapping[str, Any], title: str) -> str:
    pct = round(100 * result["level"])
    lines = [f"# Ratings: {title}", "",
             f"{result['answers']} answers from {result['listeners']} listeners. Bradley-Terry strengths "
             f"(log-odds, centred; choix), {pct}% intervals from {result['n_boot']} resamples of the listeners; "
             "no preference counts as half a win each.", "",
             "| rank | contestant | strength | interval | answers | wins | ties | losses |",
             "|---:|---|---:|---|---:|---:|---:|---:|"]
    for r in result["ranking"]:
        lines.append(f"| {r['rank']} | {r['contestant']} | {r['strength']:+.2f} | [{r['low']:+.2f}, {r['high']:+.2f}]"
                     f" | {r['answers']} | {r['wins']} | {r['ties']} | {r['losses']} |")
    lines.append("")
    if result["listeners"] < result["min_listeners"]:
        lines += [f"Fewer than {result['min_listeners']} listeners: no two contestants are called separated.", ""]
    for g in result["adjacent"]:
        verdict = "separated" if g["separated"] else "not separated: too few answers to tell them apart"
        lines.append(f"- {g['above']} over {g['below']}: {g['difference']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}],"
                     f" {verdict}")
    return "\n".join(lines) + "\n"


def plot_ratings(result: Mapping[str, Any], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    from musicgen.plots import save_figure

    rows = result["ranking"][::-1]  # best at the top
    fig = Figure(figsize=(6, 1 + 0.5 * len(rows)), dpi=100)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    s = np.array([r["strength"] for r in rows])
    err = np.array([[r["strength"] - r["low"] for r in rows], [r["high"] - r["strength"] for r in rows]])
    ax.errorbar(s, y, xerr=err, fmt="o", capsize=4, color=(0.1, 0.3, 0.7))
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, [r["contestant"] for r in rows])
    ax.set_xlabel(f"Bradley-Terry strength (log-odds), {round(100 * result['level'])}% interval over listeners")
    ax.set_title(f"{title}: {result['answers']} answers, {result['listeners']} listeners")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    save_figure(fig, path)


def rate(cfg: DictConfig) -> dict[str, Any]:
    """The ranking of the study ``cfg.study`` from its answers in ``cfg.study_dir``: files written,
    the result returned."""
    out_dir = Path(cfg.study_dir)
    store = PreferenceStore(out_dir / "answers.sqlite", create=False)
    contestants = sorted({p.contestant for p in store.pieces().values()})
    rows = store.answers_table()
    result = bradley_terry(rows, contestants, cfg.n_boot, cfg.level, cfg.seed, cfg.alpha, cfg.min_listeners)
    name = cfg.study.name
    atomic_write_text(out_dir / "ratings.json", json.dumps(result, indent=1))
    atomic_write_text(out_dir / "ratings.md", ratings_markdown(result, name))
    plot_ratings(result, out_dir / "ratings.png", name)
    for fmt in cfg.export:
        store.export(out_dir / f"answers.{fmt}")
    print(ratings_markdown(result, name), flush=True)
    if not rows:
        log.warning("no answers yet: every contestant is at zero")
    for pair in result["not_separated"]:
        log.warning("%s are not separated: the study has too few answers to tell them apart", pair)
    return result


@hydra_main("ratings")
def main(cfg: DictConfig) -> None:
    rate(cfg)


if __name__ == "__main__":
    main()
