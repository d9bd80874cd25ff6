"""What the board's training costs on this machine, before spending it: ``musicgen leaderboard estimate.run=true``.

Each entry's seed-0 run is trained for ``estimate.notes`` notes (early stopping off, two
validations), ``parallel`` at once as the board runs them, into ``<output_dir>/estimate/``; its
training seconds per note (validation left out) times the notes the board would see give one-core
minutes per entry: at the whole budget for every seed (an upper bound: early stopping only
shortens a run), and, where ``output_dir`` holds the board's finished runs, at the notes those runs
saw. The probe runs are reused when the command is run again with the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from musicgen.experiments.leaderboard.protocol import curve
from musicgen.experiments.leaderboard.runs import finished, run_dir, train_entries
from musicgen.publish import snippet_section


def probe_settings(cfg: DictConfig) -> DictConfig:
    """The board's config turned into its cost probe's: one seed, ``estimate.notes`` notes, two
    validations, no early stopping, in ``<output_dir>/estimate``."""
    return OmegaConf.merge(cfg, {"output_dir": str(Path(cfg.output_dir) / "estimate"), "seeds": 1,
                                 "budget": {"notes": cfg.estimate.notes, "validations": 2, "stop_after": None}})


def estimate(cfg: DictConfig, names: list[str]) -> dict[str, Any]:
    """Train the probe runs (or reuse them) and project the board's training time from them."""
    probe = probe_settings(cfg)
    train_entries(probe, names, evaluate=False)
    entries, seeds, budget = {}, int(cfg.seeds), float(cfg.budget.notes)
    for name in names:
        last = curve(run_dir(probe, name, 0))[-1]
        per_note = last["seconds"] / last["notes"]
        seen = [curve(run_dir(cfg, name, s)) if finished(cfg, name, s) else [] for s in range(seeds)]
        board_notes = sum(c[-1]["notes"] for c in seen) if all(seen) else None  # the board's runs, all finished
        entries[name] = {"probe_notes": last["notes"], "probe_seconds": last["seconds"],
                         "seconds_per_1000_notes": 1000 * per_note,
                         "minutes_whole_budget": seeds * budget * per_note / 60,
                         "board_notes": board_notes,
                         "minutes_board_notes": None if board_notes is None else board_notes * per_note / 60}
    total = sum(e["minutes_whole_budget"] for e in entries.values())
    on_board = [e["minutes_board_notes"] for e in entries.values()]
    parallel = int(cfg.get("parallel") or 1)
    return {"entries": entries, "seeds": seeds, "budget_notes": budget, "probe_notes": float(cfg.estimate.notes),
            "parallel": parallel, "minutes_whole_budget": total,
            "minutes_board_notes": sum(on_board) if all(m is not None for m in on_board) else None}


def markdown(est: dict[str, Any], title: str) -> str:
    rows = ["| entry | probe notes | probe seconds | seconds per 1,000 notes | one-core minutes, whole budget "
            "| one-core minutes, at the board's notes seen |", "|---|---|---|---|---|---|"]
    for name, e in est["entries"].items():
        on_board = "-" if e["minutes_board_notes"] is None else f"{e['minutes_board_notes']:.1f}"
        rows.append(f"| {name} | {e['probe_notes']:,.0f} | {e['probe_seconds']:.1f} | "
                    f"{e['seconds_per_1000_notes']:.3f} | {e['minutes_whole_budget']:.1f} | {on_board} |")
    p = est["parallel"]

    def total(minutes: float) -> str:
        return f"**{minutes:.0f} one-core minutes**, {minutes / p:.0f} minutes with {p} runs at once"

    totals = [f"- every run to its whole budget (an upper bound: early stopping only shortens a run): "
              f"{total(est['minutes_whole_budget'])}",
              f"- at the notes the board's finished runs saw: {total(est['minutes_board_notes'])}"
              if est["minutes_board_notes"] is not None else
              "- at the notes the board's runs saw: not every entry has finished runs in this output_dir"]
    lines = [f"# {title}", "",
             f"Training cost of each entry's seed 0 over {est['probe_notes']:,.0f} notes of training music "
             f"(early stopping off; training seconds, validation left out; {p} runs at once, as the board runs "
             f"them), projected onto the board: {est['seeds']} seeds of {est['budget_notes']:,.0f} notes per entry. "
             "Wall time adds validation, evaluation, data export and start-up to the training.", "",
             *snippet_section("estimate", [*rows, "", *totals])]
    return "\n".join(lines) + "\n"
