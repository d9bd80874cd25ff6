"""The pre-registered contenders: the rows named before the run in ``contenders:`` of the config,
each tested one-sided against the thesis's figure (is it below it?), Holm's correction over those
run, with its seed-aware paired differences from the reproduced PPM* models; every other row is
exploratory."""

from __future__ import annotations

from typing import Any

import numpy as np

from musicgen.metrics.statistics import holm, seed_piece_interval


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
    where that reproduction does not hold). A contender's ``beside`` row (e.g. the stricter variant
    of a rhythm row) is reported next to it with its figure and paired differences, untested:
    exploratory, outside Holm's family (``item["beside"]``, ``None`` where not run)."""

    def paired(r: dict, ds: str, refs: list[str]) -> dict[str, dict | None]:
        by_seed = np.asarray(r.get("melody_bits_by_seed", [r["melody_bits"]]))
        out = {}
        for ref in dict.fromkeys(refs):
            if holds.get(ref, {}).get(ds, {}).get("holds"):
                diffs = by_seed - np.asarray(ppm_rows[ds][ref]["melody_bits"])[None]
                out[ref] = seed_piece_interval(diffs, np.ones(diffs.shape[1]))
            else:
                out[ref] = None
        return out

    out = []
    for ds, questions in contenders.items():
        for question, c in questions.items():
            r = rows.get(c["row"], {}).get(ds)
            item = {"dataset": ds, "question": question, "row": c["row"], "thesis": c["thesis"],
                    "reference": c.get("reference", "combined"), "run": r is not None}
            if r is not None:
                by_seed = np.asarray(r.get("melody_bits_by_seed", [r["melody_bits"]]))
                item.update(figure=r["per_melody"], interval=r["per_melody_interval"],
                            p_value=below_p_value(by_seed, c["thesis"]),
                            paired=paired(r, ds, [item["reference"], "combined"]))
            if c.get("beside"):
                b = rows.get(c["beside"], {}).get(ds)
                item["beside"] = {"row": c["beside"], "run": b is not None}
                if b is not None:
                    item["beside"].update(figure=b["per_melody"], interval=b["per_melody_interval"],
                                          paired=paired(b, ds, [item["reference"], "combined"]))
            out.append(item)
    run = [c for c in out if c["run"]]
    adjusted = holm([c["p_value"] for c in run], alpha)
    for c, p, rej in zip(run, adjusted["adjusted"], adjusted["reject"]):
        c.update(holm_p=p, below_thesis=rej)
    return out


def contender_rows(contenders: dict) -> set[str]:
    return {c["row"] for qs in contenders.values() for c in qs.values()}


def contenders_result(contenders: dict, rows: dict, reproduced: dict, holds: dict) -> dict[str, Any]:
    return {"registered": contenders, "tests": contender_tests(contenders, rows, reproduced, holds)}
