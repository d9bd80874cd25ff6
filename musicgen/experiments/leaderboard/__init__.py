"""The leaderboard: ``musicgen leaderboard`` (``make leaderboard``; config ``conf/leaderboard.yaml``).

It answers the original design's claims, each fixed in the config before the run as a hypothesis:
a contrast of entries (versions, or a version with one thing changed: the claim's one control), a
metric, the smallest effect that matters and an equivalence margin. Every entry trains at the
board's ``size`` (``small``: every version shrunk by one rule; ``full``: their own sizes) on one
dataset and split, for the same budget of notes of training music
(``musicgen.training.notes_budget.NotesBudget``: not wall time; a run that converges by the board's
rule before its budget stops there), once per seed, through one Hydra multirun per entry
(``launcher=[hydra/launcher=slurm]`` sends them to a cluster). Each run is evaluated on the test
split by ``musicgen.evaluate`` and judged converged or not from its validation curve; each claim
gets its seed-aware, piece-paired interval and a verdict with Holm's correction over the family
(``verdicts``).

It writes ``leaderboard.json``, ``leaderboard.md``, ``curves.png`` and ``metrics.png`` into
``output_dir``; ``publish=true`` also writes the page and figures into the docs site
(``docs/results/<publish_name>.md``, ``leaderboard`` by default). Finished runs and evaluations
of the same settings are reused, an unfinished run starts over: an interrupted board resumes where
it stopped, and its page's wall time sums the sittings (``sittings``). ``quick=true`` shrinks
everything to smoke size (the tests). ``estimate.run=true`` trains a short probe of each entry
instead and projects what the board's training would cost on this machine (``estimate``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from musicgen.experiments import sittings
from musicgen.experiments.leaderboard import estimate
from musicgen.experiments.leaderboard.board import aggregate, markdown, plot
from musicgen.experiments.leaderboard.runs import entry_names, load_run, run_dir, train_and_evaluate
from musicgen.fs import atomic_write_text
from musicgen.publish import git_commit, publish, results_dir
from musicgen.runtime import hydra_main, usable_cores

log = logging.getLogger(__name__)


def settings(cfg: DictConfig) -> DictConfig:
    """The board's config with ``quick``'s smoke-sized settings merged in when ``quick=true``."""
    if not cfg.quick:
        return cfg
    return OmegaConf.merge(cfg, cfg.quick_settings)


def cost_estimate(cfg: DictConfig) -> str:
    """``estimate.run=true``: the cost probe (``estimate``); writes ``estimate.json`` and ``estimate.md``
    into ``<output_dir>/estimate`` (and the page ``<publish_name>-estimate`` with ``publish=true``)."""
    cfg = settings(cfg)
    names = entry_names(cfg)
    name = f"{cfg.publish_name}-estimate"
    if cfg.publish:
        results_dir(cfg.publish_dir, name)
    est = estimate.estimate(cfg, names)
    out = estimate.probe_settings(cfg).output_dir
    page = estimate.markdown(est, f"{cfg.title}: what its training costs on this machine")
    atomic_write_text(Path(out) / "estimate.json", json.dumps(est, indent=1))
    atomic_write_text(Path(out) / "estimate.md", page)
    if cfg.publish:
        log.info("published to %s", publish(name, page, docs_dir=cfg.publish_dir))
    return page


def leaderboard(cfg: DictConfig) -> dict[str, Any]:
    cfg = settings(cfg)
    out = Path(cfg.output_dir)
    names = entry_names(cfg)
    if cfg.publish:
        results_dir(cfg.publish_dir, cfg.publish_name)  # a missing docs directory or bad name fails before the training
    sittings.begin(out, commit=git_commit(), quick=bool(cfg.quick))
    run_settings = train_and_evaluate(cfg, names)
    runs = {name: [load_run(run_dir(cfg, name, s)) for s in range(cfg.seeds)] for name in names}
    board = aggregate(cfg, runs, run_settings)
    board["wall_time"] = {**sittings.wall_time(out), "cores": usable_cores()}
    atomic_write_text(out / "leaderboard.json", json.dumps(board, indent=1))
    figures = plot(board, runs, out)
    page = markdown(board)
    atomic_write_text(out / "leaderboard.md", page)
    log.info("leaderboard written to %s", out / "leaderboard.md")
    if cfg.publish:
        log.info("published to %s", publish(cfg.publish_name, page, figures, docs_dir=cfg.publish_dir))
    return board


@hydra_main("leaderboard")
def main(cfg: DictConfig) -> None:
    if cfg.estimate.run:
        print(cost_estimate(cfg))
        return
    board = leaderboard(cfg)
    print(markdown(board))


if __name__ == "__main__":
    main()
