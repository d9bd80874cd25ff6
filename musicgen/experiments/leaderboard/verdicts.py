"""The claims' verdicts: each claim is a contrast of entries (weights summing to 0: ``{a: 1, b: -1}``
for A against B, ``{v6: 1, v5: -2, v1: 1}`` for a difference of differences) on one metric,
oriented so that a positive effect is what the claim says. Its interval comes from
``seed_piece_interval`` (seeds and pieces, paired by piece: every entry is scored on the same test
pieces, and its samples are length-matched to the same drawn real pieces); its verdict from
``verdict`` (supported, contradicted, equivalent within the margin, inconclusive) at the level
Holm's step-down procedure gives the claim within the family of claims run together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from musicgen.metrics.statistics import holm, seed_piece_interval, verdict


def contrast(values: Mapping[str, np.ndarray], weights: Mapping[str, float], better: str) -> np.ndarray:
    """``sum_e weights[e] * values[e]`` (each ``(seeds, pieces)``), negated where lower is better."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    shapes = {k: np.shape(values[k]) for k in weights}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"the entries of a contrast must have the same seeds and pieces, got {shapes}")
    total = sum(float(w) * np.asarray(values[k], dtype=np.float64) for k, w in weights.items())
    return -total if better == "lower" else total


def p_value(diffs: np.ndarray, denom: np.ndarray | float, null: float, tol: float = 1e-4) -> float:
    """Two-sided p-value of ``effect == null``: one minus the highest level whose interval
    (``seed_piece_interval``) still excludes ``null``, found by bisection."""

    def excludes(level: float) -> bool:
        iv = seed_piece_interval(diffs, denom, level=level)
        return bool(iv["low"] > null or iv["high"] < null)

    value = seed_piece_interval(diffs, denom)["value"]
    if not math.isfinite(value) or value == null:
        return 1.0
    lo, hi = 0.0, 1.0 - 1e-9  # excludes(lo) is true (a zero-width interval), excludes(hi) usually false
    if excludes(hi):
        return 1e-9
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excludes(mid) else (lo, mid)
    return float(1.0 - lo)


def judge(claims: Sequence[Mapping[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Verdicts for a family of claims, each ``{"diffs": (S, P), "denom": (S, P) or (P,),
    "min_effect", "margin"}``: its effect and 95% interval, its p-value against the smallest
    effect that matters, Holm's adjusted p-value, and the verdict read off the interval at the
    level Holm allows the claim (``1 - alpha / (m - rank + 1)``, rank by p-value). Supported and
    contradicted (the smallest effect is outside) need Holm's rejection; a claim the step-down
    does not reach can still be equivalent (its interval within the margin) or is inconclusive."""
    if not claims:
        return []
    m = len(claims)
    ps = [p_value(c["diffs"], c["denom"], float(c["min_effect"])) for c in claims]
    adjusted = holm(ps, alpha)
    ranks = np.argsort(np.argsort(ps, kind="stable"), kind="stable")  # 0 = smallest p
    out = []
    for c, p, p_adj, rejected, rank in zip(claims, ps, adjusted["adjusted"], adjusted["reject"], ranks, strict=True):
        level = 1 - alpha / (m - int(rank))
        raw = seed_piece_interval(c["diffs"], c["denom"], level=1 - alpha)
        held = seed_piece_interval(c["diffs"], c["denom"], level=level)
        word = verdict(held, float(c["min_effect"]), float(c["margin"]))
        if word in ("supported", "contradicted") and not rejected:
            word = "inconclusive"
        out.append({"effect": raw["value"], "low": raw["low"], "high": raw["high"], "holm_level": level,
                    "holm_low": held["low"], "holm_high": held["high"], "p_value": p, "holm_p_value": p_adj,
                    "verdict": word})
    return out
