"""The board from the finished runs: one row per entry (seeds pooled), each run's convergence,
and the claims' verdicts; its markdown page and its figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from musicgen.errors import ConfigError
from musicgen.experiments.leaderboard.protocol import converged
from musicgen.experiments.leaderboard.verdicts import contrast, judge
from musicgen.experiments.sittings import wall_time_line
from musicgen.metrics.features import overlap
from musicgen.metrics.report import fmt
from musicgen.metrics.samples import TONAL_FIGURES, Reference, sample_figures
from musicgen.metrics.statistics import seed_piece_interval
from musicgen.plots import save_figure
from musicgen.publish import snippet_section

#: Sample figures in the board beside the NLL per note: tokeniser-independent, fair to transposition
#: first (tonic-relative pitch classes, intervals, rhythm, scale consistency), then repetition and copying.
SAMPLE_COLUMNS = ("tonic_pitch_class_overlap", "interval_overlap", "duration_overlap", "ioi_overlap",
                  "scale_consistency", "ngram_repetition_4", "copied_8gram_share_interval", "syntax_error_rate")


def tokenizer_label(run: dict[str, Any]) -> str:
    if run["evaluation"]["tokenizer"] == "PitchTokenizer":
        return "pitch strings"
    vocab = run["metrics"]["vocab_size"]
    return "REMI" if vocab == 362 else f"REMI+BPE-{vocab}"


# ----------------------------------------------------------------------------- per-piece values


def piece_values(run: dict[str, Any], metric: str, block: str = "likelihood") -> tuple[np.ndarray, np.ndarray]:
    """``(values, denominators)`` per piece of one run for ``metric``: the NLL per note as each
    test piece's total nats over its notes (``block="transposed"``: each transposed copy's, from an
    evaluation with ``transpose``); a histogram overlap (``<h>_overlap``) as each model sample's
    overlap with the run's training reference; a tonal figure as each sample's ratio (denominator
    1: the figure is the mean over samples)."""
    pieces = run["pieces"]
    if metric == "nll_per_note":
        if f"{block}/model_nll" not in pieces:
            raise ConfigError(f"{run['dir']} was evaluated without transpose: its transposed test pieces are missing")
        return pieces[f"{block}/model_nll"], pieces[f"{block}/notes"].astype(np.float64)
    if block != "likelihood":
        raise ConfigError(f"claim metric {metric!r} is a figure of samples: only nll_per_note is read on test pieces")
    if metric.endswith("_overlap"):
        h = metric[: -len("_overlap")]
        ref = np.asarray(run["evaluation"]["histograms"]["reference"][h], dtype=np.float64)
        values = np.asarray(overlap(pieces[f"model/{h}"], ref), dtype=np.float64)
    elif metric in TONAL_FIGURES:
        ratio = pieces[f"model/{metric}"]
        values = np.divide(ratio[:, 0], ratio[:, 1], out=np.full(len(ratio), np.nan), where=ratio[:, 1] > 0)
    else:
        raise ConfigError(f"claim metric {metric!r}: use nll_per_note, a <histogram>_overlap or one of {TONAL_FIGURES}")
    return values, np.ones_like(values)


def _by_name(runs: dict[str, list[dict[str, Any]]], claim: DictConfig, block: str) -> dict[str, list[int]] | None:
    """Each run's rows of the claim's test pieces, in one order of piece names shared by every run
    (``claim.pieces``: only pieces whose names start with it, e.g. ``chorales/``); None where the
    runs carry no piece names (evaluations before names: paired by position). Runs of the contrast
    that scored different pieces are a one-line ``ConfigError``."""
    prefix = claim.get("pieces")
    named = [(e, r) for e in claim.contrast for r in runs[e]]
    if not all(f"{block}/names" in r["pieces"] for _, r in named):
        if prefix:
            raise ConfigError(f"claim {claim.name}: pieces={prefix!r} needs each test piece's name in "
                              "evaluation_pieces.npz; evaluate the runs again")
        return None
    first, order = None, None
    rows: dict[str, list[int]] = {}
    for e, r in named:
        names = [str(n) for n in r["pieces"][f"{block}/names"]]
        index = {n: i for i, n in enumerate(names) if not prefix or n.startswith(prefix)}
        if order is None:
            first, order = e, sorted(index)
            if not order:
                raise ConfigError(f"claim {claim.name}: {e} scored no test piece named {prefix}...")
        elif sorted(index) != order:
            common = len(set(index) & set(order))
            what = f"{prefix} test pieces" if prefix else "test pieces"
            raise ConfigError(f"claim {claim.name}: {e} and {first} did not score the same {what} ({len(index)} "
                              f"and {len(order)}, {common} in common), so they cannot be paired by piece")
        rows.setdefault(e, [])
        rows[e].append([index[n] for n in order])
    return rows


def claim_input(runs: dict[str, list[dict[str, Any]]], claim: DictConfig) -> dict[str, Any]:
    """A claim's per-seed, per-piece differences (pieces with a value in every run) and denominators:
    NLL per note paired by piece name where the evaluations name their pieces (on the transposed
    copies with ``claim.transpose``, on the pieces named ``claim.pieces...`` only with that)."""
    weights = dict(claim.contrast)
    seeds = min(len(runs[e]) for e in weights)
    block = "transposed" if claim.get("transpose") else "likelihood"
    if claim.get("pieces") and claim.metric != "nll_per_note":
        raise ConfigError(f"claim {claim.name}: pieces={claim.pieces!r} needs the metric nll_per_note")
    rows = _by_name({e: runs[e][:seeds] for e in weights}, claim, block) if claim.metric == "nll_per_note" else None
    values, denom = {}, None
    for e in weights:
        pairs = [piece_values(r, claim.metric, block) for r in runs[e][:seeds]]
        if rows is not None:
            pairs = [(v[rows[e][k]], d[rows[e][k]]) for k, (v, d) in enumerate(pairs)]
        values[e] = np.stack([v for v, _ in pairs])
        d = pairs[0][1]
        if denom is not None and (len(d) != len(denom) or not np.array_equal(d, denom)):
            raise ConfigError(f"claim {claim.name}: {e} was not scored on the same pieces as {next(iter(weights))}")
        denom = d
    keep = np.all([np.isfinite(v).all(axis=0) for v in values.values()], axis=0)
    diffs = contrast({e: v[:, keep] for e, v in values.items()}, weights, claim.better)
    return {"diffs": diffs, "denom": denom[keep], "pieces": int(keep.sum()), "seeds": seeds,
            "min_effect": float(claim.min_effect), "margin": float(claim.margin)}


# ----------------------------------------------------------------------------- the board


def entry_row(cfg: DictConfig, name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]
    ev, c, m = first["evaluation"], first["config"], first["metrics"]
    ref = Reference({h: np.asarray(v) for h, v in ev["histograms"]["reference"].items()},
                    tuple(ev["settings"]["reference_pitch_range"]), {}, ev["settings"]["reference_pieces"])
    blocks = [{k.split("/", 1)[1]: v for k, v in r["pieces"].items() if k.startswith("model/")} for r in runs]
    row = sample_figures({k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}, ref,
                         cfg.evaluate.bootstrap)
    nll, notes = zip(*(piece_values(r, "nll_per_note") for r in runs), strict=True)
    row["nll_per_note"] = seed_piece_interval(np.stack(nll), notes[0])
    row["seeds_nll_per_note"] = [r["evaluation"]["model"]["nll_per_note"]["value"] for r in runs]
    conv = [converged(r["curve"], float(cfg.budget.notes), cfg.budget.tolerance) for r in runs]
    last = [r["curve"][-1] if r["curve"] else {} for r in runs]
    row.update(
        entry=name, version=c["version"]["name"], model=c["model"]["_target_"].rsplit(".", 1)[1],
        objective=c["objective"]["name"], tokenizer=tokenizer_label(first), parameters=m["n_params"],
        seq_len=c["data"]["seq_len"], seeds=len(runs),
        steps=float(np.mean([r["metrics"]["global_step"] for r in runs])),
        notes_seen=float(np.mean([p.get("notes", math.nan) for p in last])),
        flops=float(np.mean([p.get("flops", math.nan) for p in last])),
        train_seconds=float(np.mean([p.get("seconds", math.nan) for p in last])),
        converged=[{"seed": s, **v} for s, v in enumerate(conv)],
        runs_converged=sum(v["converged"] for v in conv),
    )
    return row


def scored_on(claim: DictConfig) -> str:
    """What a claim's metric is read on, in words."""
    if claim.get("transpose"):
        return f"the test pieces transposed by {', '.join(f'{int(v):+d}' for v in claim.transpose)} semitones"
    if claim.get("pieces"):
        return f"the test pieces named {claim.pieces}..."
    return "the test pieces" if claim.get("metric") == "nll_per_note" else "samples"


def aggregate(cfg: DictConfig, runs: dict[str, list[dict[str, Any]]], settings: dict[str, list[str]]) -> dict[str, Any]:
    entries = {name: {**entry_row(cfg, name, rs), "overrides": settings[name]} for name, rs in runs.items()}
    claims, inputs = [], []
    for claim in cfg.claims:
        row = {"name": claim.name, "hypothesis": claim.hypothesis, "metric": claim.get("metric"),
               "contrast": dict(claim.contrast) if claim.get("contrast") else None,
               "better": claim.get("better"), "min_effect": claim.get("min_effect"), "margin": claim.get("margin"),
               "scored_on": scored_on(claim)}
        missing = [e for e in (claim.get("contrast") or {}) if e not in runs]
        if claim.get("not_run"):
            row.update(verdict="not run", reason=claim.not_run)
        elif missing:
            row.update(verdict="not run", reason=f"entries {missing} are not on this board (only=...)")
        else:
            try:
                inputs.append((row, claim_input(runs, claim)))
            except ConfigError as e:  # e.g. entries scored on different pieces: no paired verdict
                row.update(verdict="not run", reason=str(e))
                claims.append(row)
                continue
            unconverged = [f"{e}_s{v['seed']}" for e in claim.contrast for v in entries[e]["converged"]
                           if not v["converged"]]
            row.update(unconverged=unconverged)
        claims.append(row)
    for (row, data), result in zip(inputs, judge([d for _, d in inputs], cfg.alpha), strict=True):
        row.update(result, pieces=data["pieces"], seeds=data["seeds"])
    return {"settings": {"title": cfg.title, "size": cfg.size, "sizes": OmegaConf.to_container(cfg.sizes[cfg.size]),
                         "budget": OmegaConf.to_container(cfg.budget), "seeds": cfg.seeds, "alpha": cfg.alpha,
                         "parallel": int(cfg.get("parallel") or 1),
                         "common": list(cfg.common), "evaluate": OmegaConf.to_container(cfg.evaluate)},
            "entries": entries, "claims": claims,
            "runs_converged": sum(e["runs_converged"] for e in entries.values()),
            "runs_stopped_early": sum(v["stopped_early"] for e in entries.values() for v in e["converged"]),
            "runs": sum(e["seeds"] for e in entries.values())}


# ----------------------------------------------------------------------------- the page


def _num(x: float, spec: str = ",.0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _interval(row: dict[str, Any], key: str = "") -> str:
    low, high = row.get(f"{key}low"), row.get(f"{key}high")
    return "-" if low is None else f"[{low:.3f}, {high:.3f}]"


def markdown(board: dict[str, Any]) -> str:
    s = board["settings"]
    b = s["budget"]
    keys = ("nll_per_note", *SAMPLE_COLUMNS)
    lines = [
        f"# {s.get('title') or 'Leaderboard'}", "",
        *([wall_time_line(board["wall_time"], "page"), ""] if board.get("wall_time") else []),
        f"Size `{s['size']}` ({', '.join(f'{k} {v}' for k, v in s['sizes'].items())}); every run had the same "
        f"budget of {b['notes']:,.0f} notes of training music (loss targets counted in source notes)"
        + ("" if b.get("stop_after") is None else
           f", and stopped early where the convergence rule below held after {100 * b['stop_after']:.0f}% of it "
           f"({board.get('runs_stopped_early', 0)} of {board['runs']} runs)")
        + f", {s['seeds']} seeds per "
        f"entry on one data split (`{' '.join(s['common'])}`), each evaluated on the test split "
        f"({s['evaluate']['num_samples']} length-matched samples per seed). {board['runs_converged']} of "
        f"{board['runs']} runs converged (validation NLL per note improved by less than "
        f"{100 * b['tolerance']:.0f}% over the last fifth of training, or early stopping fired). NLL per note: over "
        "seeds and pieces, with the seed-aware interval; it compares tokenisations of the same information "
        "only (REMI and REMI+BPE), not pitch strings with REMI. Sample figures: all seeds' samples, interval "
        "over pieces. Training seconds exclude validation and are never used for a verdict"
        + (f" ({s['parallel']} runs trained at once, sharing the cores)." if s.get("parallel", 1) > 1 else "."),
        "",
    ]
    table = ["| entry | model | tokeniser | window | parameters | steps | notes seen | training FLOPs | seconds | "
             "converged | " + " | ".join(keys) + " |",
             "|---" * (len(keys) + 10) + "|"]
    for e in board["entries"].values():
        table.append(
            f"| {e['entry']} | {e['model']} ({e['objective']}) | {e['tokenizer']} | {e['seq_len']} | "
            f"{_num(e['parameters'])} | {_num(e['steps'])} | {_num(e['notes_seen'])} | {_num(e['flops'], '.2e')} | "
            f"{_num(e['train_seconds'])} | {e['runs_converged']}/{e['seeds']} | "
            + " | ".join(fmt(e.get(k)) for k in keys) + " |")
    lines += [*snippet_section("entries", table), "", "## Claims", "",
              "Each claim is fixed in `conf/leaderboard.yaml` before the run: a contrast of entries on one metric, "
              "its smallest effect that matters and its equivalence margin. Effect: positive means the claim's "
              "direction; interval: 95% over seeds and pieces (paired by piece); the verdict is read at the level "
              "Holm's step-down procedure allows over the family.", ""]
    table = ["| claim | contrast | metric | effect | 95% interval | min effect | margin | Holm p | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in board["claims"]:
        contrast_text = " ".join(f"{w:+g} {e}" for e, w in (c["contrast"] or {}).items())
        if c.get("scored_on") and c["scored_on"] not in ("the test pieces", "samples"):
            contrast_text += f" (on {c['scored_on']})"
        if c["verdict"] == "not run":
            table.append(f"| {c['hypothesis']} | {contrast_text} | {c['metric'] or '-'} | - | - | "
                         f"{c['min_effect'] or '-'} | {c['margin'] or '-'} | - | not run: {c['reason']} |")
            continue
        note = f" (rests on unconverged runs: {', '.join(c['unconverged'])})" if c["unconverged"] else ""
        table.append(f"| {c['hypothesis']} | {contrast_text} | {c['metric']} | {c['effect']:.3f} | {_interval(c)} | "
                     f"{c['min_effect']} | {c['margin']} | {c['holm_p_value']:.3g} | **{c['verdict']}**{note} |")
    lines += [*snippet_section("claims", table), "", "## Convergence of each run", "",
              "| run | improvement of the best validation NLL per note over the last fifth | converged |",
              "|---|---|---|"]
    for e in board["entries"].values():
        for v in e["converged"]:
            lines.append(f"| {e['entry']}_s{v['seed']} | {_num(100 * v['improvement'], '.2f')}% | "
                         f"{'yes' if v['converged'] else 'no'} ({v['reason']}) |")
    lines += ["", "![validation NLL per note against notes seen and FLOPs](curves.png)", "",
              "![metrics](metrics.png)", ""]
    return "\n".join(lines)


def plot(board: dict[str, Any], runs: dict[str, list[dict[str, Any]]], out_dir: Path) -> list[Path]:
    """``curves.png`` (validation NLL per note against notes seen and training FLOPs, every run)
    and ``metrics.png`` (each board figure per entry with its interval)."""
    fig = Figure(figsize=(13, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for k, (name, rs) in enumerate(runs.items()):
        for s, r in enumerate(rs):
            for ax, x in zip(axes, ("notes", "flops"), strict=True):
                ax.plot([p[x] for p in r["curve"]], [p["nll_per_note"] for p in r["curve"]],
                        marker=".x+"[k // 10 % 3], linestyle=("-", "--", ":")[k // 10 % 3],  # ten colours, then dashed
                        color=f"C{k % 10}", alpha=0.9 if s == 0 else 0.35, label=name if s == 0 else None)
    for ax, label in zip(axes, ("notes of training music seen", "training FLOPs"), strict=True):
        ax.set_xlabel(label)
        ax.set_ylabel("validation NLL per note (nats)")
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, out_dir / "curves.png")

    entries = list(board["entries"].values())
    keys = ("nll_per_note", *SAMPLE_COLUMNS)
    fig = Figure(figsize=(15, 7), dpi=100)
    FigureCanvasAgg(fig)
    for k, key in enumerate(keys):
        ax = fig.add_subplot(2, math.ceil(len(keys) / 2), k + 1)
        for j, e in enumerate(entries):
            f = e.get(key) or {"value": math.nan, "low": math.nan, "high": math.nan}
            err = None if math.isnan(f["low"]) else [[max(0, f["value"] - f["low"])], [max(0, f["high"] - f["value"])]]
            ax.bar(j, f["value"], yerr=err, color=f"C{j % 10}", capsize=3)
        ax.set_xticks(range(len(entries)), [e["entry"] for e in entries], rotation=60, fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out_dir / "metrics.png")
    return [out_dir / "curves.png", out_dir / "metrics.png"]
