"""``make ttq-ablation`` (``python -m musicgen.experiments.speed.ablation``, conf/ttq_ablation.yaml):
the recipe candidates of issue 32 raced against the default recipe, each on its own, then the
best combination, then the winner confirmed on fresh seeds.

Every arm is ``musicgen.train <train overrides> <the arm's overrides> seed=<s>`` for ``budget_s``
of wall time (``musicgen.experiments.speed.ttq``'s ``run_ours``), on one data split
(``data.seed``), so every run is scored on the same test pieces. The arms:

1. ``default`` (the recipe as it is) and each candidate of ``candidates`` (one override list
   each; ``arms`` picks some) on the selection ``seeds``;
2. ``combo``: the candidates that helped on their own (time ratio below 1), all together, on the
   same seeds (run only when two or more helped);
3. the winner (the helping arm with the lowest time ratio) and ``default`` again on
   ``confirm_seeds``, which must be fresh (none of ``seeds``): the winner is ``confirmed`` when
   its time ratio's interval there lies below 1 (it excludes no change), the condition for it to
   become a default.

Each arm is compared with ``default`` of the same seed: the time to the target (the validation
NLL/note to reach: ``target=default``, the default recipe's final value of that seed, as the race
uses the peer's; ``peer``, the tuned peer's mean final value in the race's ``ttq.json``; or a
number), interpolated between validations, as a ratio arm / default with the t interval over seeds
on its logarithm (``ratio_interval``); the final test NLL/note at equal time, the difference arm -
default paired by piece, its interval over seeds and pieces (``seed_piece_interval``).

Every run's record (curve, per-piece test NLL) is kept in ``<out_dir>/<arm>/seed_<s>/record.json``
and reused when the command runs again with the same settings, so a stopped ablation continues
where it stopped (an interrupted run starts over: a race cannot resume mid-run). Writes
``ablation.json``, ``ablation.md`` and ``curves.png``; ``publish=true``: the docs page.
"""

from __future__ import annotations

from musicgen.experiments.speed.env import OMP_WAIT_POLICY

# isort: split
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from musicgen.errors import ConfigError
from musicgen.experiments.speed import with_quick
from musicgen.experiments.speed.harness import machine_info
from musicgen.experiments.speed.ttq import (
    check_seeds,
    common_pieces,
    fmt_interval,
    fmt_value,
    goal_verdict,
    pieces_by_seed,
    ratio_interval,
    reach_ratio,
    run_ours,
    score_ours,
    time_to_reach,
    train_overrides,
    unpaired_ratio_interval,
)
from musicgen.fs import atomic_write_text
from musicgen.metrics.statistics import seed_piece_interval, t_over_seeds
from musicgen.publish import publish, results_dir, snippet_section
from musicgen.runtime import hydra_main, pick_device

__all__ = ["OMP_WAIT_POLICY", "arm_overrides", "compare", "run"]

log = logging.getLogger(__name__)

DEFAULT, COMBO = "default", "combo"


# ----------------------------------------------------------------------------- config


def arm_overrides(cfg: DictConfig) -> dict[str, list[str]]:
    """The arms raced on the selection seeds: ``default`` (no override) and each candidate of
    ``arms`` (null: every one of ``candidates``) with its own overrides, in the config's order."""
    candidates = {str(k): [str(o) for o in v] for k, v in cfg.candidates.items()}
    for name, ovr in candidates.items():
        if name in (DEFAULT, COMBO) or not ovr:
            raise ConfigError(f"candidates.{name}: a name other than {DEFAULT}/{COMBO}, with at least one override")
    names = list(candidates) if cfg.arms is None else [str(a) for a in cfg.arms]
    unknown = [a for a in names if a not in candidates]
    if unknown or not names:
        raise ConfigError(f"arms={names}: name one or more of the candidates {list(candidates)}")
    return {DEFAULT: []} | {a: candidates[a] for a in names}


def check_confirm_seeds(cfg: DictConfig) -> tuple[list[int], list[int]]:
    """The selection seeds and the confirmation seeds, which must be fresh (none shared)."""
    seeds, confirm = check_seeds(cfg.seeds, "seeds"), check_seeds(cfg.confirm_seeds, "confirm_seeds")
    shared = sorted(set(seeds) & set(confirm))
    if shared:
        raise ConfigError(f"confirm_seeds={confirm} shares {shared} with seeds={seeds}: a winner is confirmed on "
                          "fresh seeds")
    return seeds, confirm


# ----------------------------------------------------------------------------- runs


def arm_run(cfg: DictConfig, overrides: list[str], seed: int, run_dir: Path, device: torch.device) -> dict[str, Any]:
    """One arm, one seed: trained for ``budget_s`` and its best checkpoint scored on the test pieces."""
    ours = run_ours([*train_overrides(cfg, seed), *overrides], float(cfg.budget_s), run_dir)
    return {"seed": int(seed), "overrides": overrides, "ours": ours,
            "test": score_ours(run_dir, device, int(cfg.scoring.batch_size))}


def race_default(cfg: DictConfig, seed: int) -> dict[str, Any] | None:
    """Our run of ``seed`` in the race (``make ttq``'s ``seed_<s>/race.json`` beside ``race``) when it
    is the default recipe's run of this ablation: the same train overrides (seed and split included)
    and budget, its best checkpoint scored on the same test pieces. None when there is none or it differs."""
    path = Path(cfg.race).parent / f"seed_{seed}" / "race.json"
    if not cfg.reuse_race or not path.is_file():
        return None
    race = json.loads(path.read_text())
    key = race.get("key", {})
    if key.get("train_overrides") != train_overrides(cfg, seed) or key.get("budget_s") != float(cfg.budget_s):
        log.info("default, seed %d: the race's run in %s has other settings, not reused", seed, path)
        return None
    return {"seed": int(seed), "overrides": [], "ours": race["ours"], "test": race["test"]["ours"],
            "from_race": str(path)}


def arm_records(cfg: DictConfig, arm: str, overrides: list[str], seeds: list[int], out: Path,
                device: torch.device) -> list[dict[str, Any]]:
    """``arm`` on each of ``seeds``: a record written with the same settings is reused, and so is the
    race's run of a seed for ``default`` (``race_default``)."""
    records = []
    for seed in seeds:
        path = out / arm / f"seed_{seed}" / "record.json"
        key = json.loads(json.dumps({"budget_s": float(cfg.budget_s), "overrides":
                                     [*train_overrides(cfg, seed), *overrides]}))
        if path.is_file():
            rec = json.loads(path.read_text())
            if rec.get("key") != key:
                raise ConfigError(f"{path} holds a run with other settings; use another out_dir, or delete "
                                  f"{path.parent} to run it again")
            log.info("%s, seed %d: finished, reused", arm, seed)
        elif arm == DEFAULT and (from_race := race_default(cfg, seed)) is not None:
            rec = from_race | {"key": key}
            atomic_write_text(path, json.dumps(rec, indent=1, default=str) + "\n")
            log.info("%s, seed %d: the race's run of the same command, reused (%s)", arm, seed, rec["from_race"])
        else:
            t = time.perf_counter()
            rec = arm_run(cfg, overrides, seed, path.parent, device) | {"key": key}
            atomic_write_text(path, json.dumps(rec, indent=1, default=str) + "\n")
            log.info("%s, seed %d: done in %.0f s", arm, seed, time.perf_counter() - t)
        records.append(rec)
    return records


# ----------------------------------------------------------------------------- statistics


def final_val(rec: dict[str, Any]) -> float | None:
    curve = rec["ours"]["curve"]
    return curve[-1]["nats_per_note"] if curve else None


def compare(arm: list[dict[str, Any]], default: list[dict[str, Any]], target: float | None,
            max_pieces: int | None = None) -> dict[str, Any]:
    """``arm`` against ``default`` seed by seed (the records in the same seed order): the time each
    first reaches the target (``target``, or None: the default's final validation NLL/note of that
    seed), their ratio over seeds (``ratio_interval``); the final validation NLL/note (t over
    seeds, and the difference paired by seed); the test NLL/note and the difference arm - default,
    paired by piece, over seeds and pieces (``seed_piece_interval``)."""
    seeds = [r["seed"] for r in arm]
    if seeds != [r["seed"] for r in default]:
        raise ValueError(f"arm seeds {seeds} and default seeds {[r['seed'] for r in default]} differ")
    per_seed = []
    for a, d in zip(arm, default, strict=True):
        goal = final_val(d) if target is None else target
        a_hit, d_hit, ratio = reach_ratio(a["ours"]["curve"], d["ours"]["curve"], goal)
        per_seed.append({"seed": a["seed"], "target": goal, "reach": a_hit, "default_reach": d_hit, "ratio": ratio,
                         "final_val": final_val(a), "steps": a["ours"]["steps"]})
    names, notes = common_pieces([r["test"] for r in arm + default], max_pieces)
    a_nll = pieces_by_seed([r["test"] for r in arm], names)
    d_nll = pieces_by_seed([r["test"] for r in default], names)
    finals = [s["final_val"] for s in per_seed]
    d_finals = [final_val(d) for d in default]
    reached = [s["reach"]["interpolated_wall_s"] for s in per_seed if s["reach"]]
    return {
        "per_seed": per_seed,
        "time_to_target_s": float(np.mean(reached)) if len(reached) == len(per_seed) else None,
        "ratio": ratio_interval([s["ratio"] for s in per_seed]),
        "final_val": t_over_seeds(finals),
        "final_val_minus_default": t_over_seeds(np.subtract(finals, d_finals)),
        "test": {"pieces": len(names), "nll_per_note": seed_piece_interval(a_nll, notes),
                 "minus_default": seed_piece_interval(a_nll - d_nll, notes)},
    }


def helped(comparison: dict[str, Any]) -> bool:
    """The arm reached the target sooner than the default (its time ratio's estimate below 1)."""
    value = comparison["ratio"]["value"]
    return value is not None and value < 1.0


def confirmed(comparison: dict[str, Any]) -> bool:
    """A win on the confirmation seeds: the time ratio's whole interval below 1."""
    high = comparison["ratio"]["high"]
    return high is not None and math.isfinite(high) and high < 1.0


def resolve_target(cfg: DictConfig) -> tuple[float | None, str, list[float] | None]:
    """The validation NLL/note every arm races to (None: each seed's default final), its words, and
    with ``target=peer`` the peer's time to that value in each race seed's curve (seeds where the
    peer never reached it left out, and said in the words)."""
    t = cfg.target
    if t == "default":
        return None, "the default recipe's final validation NLL/note of the same seed", None
    if t == "peer":
        path = Path(cfg.race)
        if not path.is_file():
            raise ConfigError(f"target=peer reads the race's result at race={path}, which is missing: run `make ttq` "
                              "first, or target=default")
        race = json.loads(path.read_text())
        value = float(race["summary"]["final_val"]["peer"]["value"])
        # the peer's own time to this value on each race seed (not to that seed's final: the arms race to the mean)
        hits = [time_to_reach(rec["peer"]["curve"], value) for rec in race["records"]]
        times = [h["interpolated_wall_s"] for h in hits if h]
        words = f"the tuned peer's final validation NLL/note, {value:.3f} (mean of {len(hits)} seeds, {path})"
        if len(times) < len(hits):
            words += f"; the peer itself reached it on {len(times)} of its {len(hits)} seeds"
        return value, words, times
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise ConfigError(f"target={t}: default, peer or a number of nats per note") from None
    return value, f"{value:.3f} nats/note (set by target=)", None


def against_peer(comparisons: dict[str, dict[str, Any]], peer_times: list[float], goal: float) -> dict[str, Any]:
    """Each arm's time to the peer's final value over the peer's own time to it (the race's seeds:
    unpaired, ``unpaired_ratio_interval``) and the goal's verdict (``goal_verdict``)."""
    out = {}
    for arm, c in comparisons.items():
        times = [s["reach"]["interpolated_wall_s"] if s["reach"] else None for s in c["per_seed"]]
        iv = unpaired_ratio_interval(times, peer_times)
        out[arm] = iv | {"verdict": goal_verdict(iv, goal)}
    return out


# ----------------------------------------------------------------------------- report


def _ratio(c: dict[str, Any]) -> str:
    r = c["ratio"]
    return fmt_interval(r) if r["value"] is not None else f"n/a (not reached on {r['not_reached']} seed(s))"


def _table(rows: dict[str, dict[str, Any]], overrides: dict[str, list[str]]) -> list[str]:
    lines = ["| arm | overrides | time to target, s (mean) | time ratio to default [95%] | final val NLL/note | "
             "test NLL/note [95%] | test minus default [95%, paired] |",
             "|---|---|---:|---|---:|---|---|"]
    for arm, c in rows.items():
        ovr = " ".join(f"`{o}`" for o in overrides[arm]) or "(none)"
        ratio = _ratio(c) if arm != DEFAULT else "1"
        lines.append(f"| {arm} | {ovr} | {fmt_value(c['time_to_target_s'], 0)} | {ratio} | "
                     f"{fmt_value(c['final_val']['value'])} | {fmt_interval(c['test']['nll_per_note'])} | "
                     f"{fmt_interval(c['test']['minus_default']) if arm != DEFAULT else ''} |")
    return lines


def render_markdown(res: dict[str, Any]) -> str:
    sel, conf = res["selection"], res["confirmation"]
    lines = [
        "# Recipe ablation: time to quality of each candidate against the default recipe",
        "",
        f"Each arm is `musicgen.train` with the default recipe's overrides plus the arm's, {res['budget_s']:.0f} s of "
        f"training wall time (validation included), on one split (`data.seed={res['data_seed']}`); selection seeds "
        f"{res['seeds']}, confirmation seeds {res['confirm_seeds']}. Target: {res['target_words']}. Times are "
        "interpolated between validations; the time ratio is the geometric mean over seeds of arm / default of "
        "the same seed with a 95% t interval on its logarithm; test NLL/note at equal time, paired by piece, "
        "intervals over seeds and pieces. Machine: "
        f"{res['machine']['cpu']}, {res['machine']['cores']} cores, device {res['machine']['device']}.",
        "",
        "## Selection",
        "",
        *snippet_section("selection", _table(sel, res["overrides"])),
        "",
    ]
    helping = res["helped"]
    lines.append(f"Helped on their own (time ratio below 1): {', '.join(helping) if helping else 'none'}; did not "
                 f"help: {', '.join(a for a in sel if a not in (DEFAULT, COMBO, *helping)) or 'none'}.")
    if COMBO in sel:
        lines.append(f"The combination ({' + '.join(res['combo'])}) was raced on the same seeds.")
    lines += ["", "## Confirmation", ""]
    if conf is None:
        lines.append("No arm helped on the selection seeds: nothing to confirm, the default recipe stays.")
    else:
        w = res["winner"]
        lines += [*snippet_section("confirmation", _table(conf, res["overrides"])), "",
                  f"Winner on the selection seeds: **{w}**. On the fresh seeds {res['confirm_seeds']}: **"
                  f"{'confirmed' if res['confirmed'] else 'not confirmed'}** (time ratio {_ratio(conf[w])}; it "
                  "becomes a default only if the whole interval lies below 1)."]
    lines += ["", "## Against the tuned peer", ""]
    vp = res["vs_peer"]
    if vp is None:
        lines.append("Run with `target=peer` after `make ttq` for each arm's time to the tuned peer's final "
                     "validation NLL/note over the peer's own time to it (the issue's goal: at most 0.5).")
    else:
        lines += [f"Each arm's time to the peer's final validation NLL/note over the peer's own time to it (the race's "
                  f"{len(vp['peer_times_s'])} peer seeds; other seeds, so unpaired: Welch's t interval on the log "
                  f"times). The goal: at most {vp['goal_ratio']:g}, interval included.", ""]
        rows = ["| seeds | arm | ours / peer time [95%] | goal |", "|---|---|---|---|"]
        for phase in ("selection", "confirmation"):
            for arm, iv in vp[phase].items():
                shown = fmt_interval(iv) if iv["value"] is not None else f"not reached on {iv['not_reached']} seed(s)"
                rows.append(f"| {phase} | {arm} | {shown} | {iv['verdict']} |")
        lines += snippet_section("vs_peer", rows)
    lines += ["", "![validation curves](curves.png)", ""]
    return "\n".join(lines)


def plot_curves(runs: dict[str, dict[str, list[dict[str, Any]]]], target: float | None, path: Path) -> None:
    """Validation NLL/note against wall time, one panel per phase, one colour per arm, a line per
    seed; dotted: the target (None: each seed's default final value); the axis shows from the
    lowest value to 1 nat above the target, where the arms part."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401 (the Agg canvas, as musicgen.plots)
    from matplotlib.figure import Figure

    from musicgen.plots import save_figure

    phases = [p for p in runs if runs[p]]
    fig = Figure(figsize=(6 * len(phases), 4.5), dpi=100)
    arms = sorted({a for p in phases for a in runs[p]}, key=lambda a: (a != DEFAULT, a))
    colors = {a: f"C{i % 10}" for i, a in enumerate(arms)}
    for k, phase in enumerate(phases):
        ax = fig.add_subplot(1, len(phases), k + 1)
        for arm, recs in runs[phase].items():
            for i, rec in enumerate(recs):
                c = rec["ours"]["curve"]
                ax.plot([q["wall_s"] for q in c], [q["nats_per_note"] for q in c], "-", lw=1, color=colors[arm],
                        label=arm if i == 0 else None)
        targets = [target] if target is not None else [final_val(r) for r in runs[phase][DEFAULT]]
        for value in targets:
            ax.axhline(value, color="k", ls=":", lw=0.8)
        lowest = min(q["nats_per_note"] for recs in runs[phase].values() for r in recs for q in r["ours"]["curve"])
        ax.set_ylim(lowest - 0.05, max(targets) + 1.0)  # the race is decided near the target, not in the first steps
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel("validation NLL (nats per note)")
        ax.set_title(f"{phase} seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- run


def run(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The ablation (selection, combination, confirmation), reusing finished runs; writes
    ablation.json, ablation.md and curves.png to ``out_dir`` (and the docs page with publish=true)."""
    cfg = with_quick(cfg, overrides)
    seeds, confirm_seeds = check_confirm_seeds(cfg)
    arms = arm_overrides(cfg)
    target, target_words, peer_times = resolve_target(cfg)
    if cfg.publish:
        results_dir(cfg.publish_dir, cfg.publish_name)
    start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    max_pieces = cfg.scoring.max_pieces

    # 1. each arm on the selection seeds, against the default recipe on the same seeds
    records = {arm: arm_records(cfg, arm, ovr, seeds, out, device) for arm, ovr in arms.items()}
    selection = {arm: compare(recs, records[DEFAULT], target, max_pieces) for arm, recs in records.items()}
    helping = [a for a in arms if a != DEFAULT and helped(selection[a])]

    # 2. the best combination: every candidate that helped on its own
    combo = helping if len(helping) >= 2 else []
    if combo:
        arms[COMBO] = [o for a in combo for o in arms[a]]
        records[COMBO] = arm_records(cfg, COMBO, arms[COMBO], seeds, out, device)
        selection[COMBO] = compare(records[COMBO], records[DEFAULT], target, max_pieces)
    candidates = [a for a in [*helping, *([COMBO] if combo else [])] if helped(selection[a])]
    winner = min(candidates, key=lambda a: selection[a]["ratio"]["value"]) if candidates else None

    # 3. the winner and the default again, on fresh seeds
    confirmation, confirm_records = None, {}
    if winner is not None:
        confirm_records = {arm: arm_records(cfg, arm, arms[arm], confirm_seeds, out, device)
                           for arm in (DEFAULT, winner)}
        confirmation = {arm: compare(recs, confirm_records[DEFAULT], target, max_pieces)
                        for arm, recs in confirm_records.items()}
    vs_peer = None
    if peer_times:
        vs_peer = {"goal_ratio": float(cfg.goal_ratio), "peer_times_s": peer_times,
                   "selection": against_peer(selection, peer_times, float(cfg.goal_ratio)),
                   "confirmation": against_peer(confirmation or {}, peer_times, float(cfg.goal_ratio))}
    res = {
        "budget_s": float(cfg.budget_s),
        "seeds": seeds,
        "confirm_seeds": confirm_seeds,
        "data_seed": int(cfg.data.seed),
        "quick": bool(cfg.quick),
        "machine": machine_info(device),
        "target": target,
        "target_words": target_words,
        "overrides": arms,
        "selection": selection,
        "helped": helping,
        "combo": combo,
        "winner": winner,
        "confirmation": confirmation,
        "confirmed": bool(confirmation and confirmed(confirmation[winner])),
        "vs_peer": vs_peer,
        "runs": {phase: {arm: [r["ours"]["run_dir"] for r in recs] for arm, recs in rs.items()}
                 for phase, rs in (("selection", records), ("confirmation", confirm_records))},
        "seconds": time.perf_counter() - start,
        "settings": {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                     for k, v in cfg.items() if k not in ("paths", "quick_overrides", "hydra")},
    }
    md = render_markdown(res)
    atomic_write_text(out / "ablation.json", json.dumps(res, indent=1, default=str) + "\n")
    atomic_write_text(out / "ablation.md", md)
    plot_curves({"selection": records, "confirmation": confirm_records}, target, out / "curves.png")
    log.info("wrote %s, %s, %s", out / "ablation.json", out / "ablation.md", out / "curves.png")
    if cfg.publish:
        log.info("published to %s", publish(cfg.publish_name, md, {"curves.png": out / "curves.png"},
                                            docs_dir=cfg.publish_dir))
    log.info("helped: %s; winner: %s; confirmed: %s", helping or "none", winner, res["confirmed"])
    return res


@hydra_main("ttq_ablation")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
