"""Training and evaluating the board's runs (reused when finished with the same settings), and
reading back what the board needs from each: its metrics, evaluation, per-piece statistics, curve."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from musicgen.errors import ConfigError, UserError
from musicgen.experiments.leaderboard.protocol import budget_overrides, converged, curve, entry_overrides
from musicgen.fs import atomic_write_text
from musicgen.runtime import usable_cores

log = logging.getLogger(__name__)


def entry_names(cfg: DictConfig) -> list[str]:
    names = list(cfg.entries) if cfg.only is None else list(cfg.only)
    unknown = [n for n in names if n not in cfg.entries]
    if unknown:
        raise ConfigError(f"only={names}: {unknown} are not entries; choose from {list(cfg.entries)}")
    if cfg.seeds < 1:
        raise ConfigError(f"seeds={cfg.seeds} must be >= 1")
    if cfg.size not in cfg.sizes:
        raise ConfigError(f"size={cfg.size!r}: choose from {list(cfg.sizes)}")
    return names


def run_dir(cfg: DictConfig, name: str, seed: int) -> Path:
    return Path(cfg.output_dir) / "runs" / f"{name}_s{seed}"


def run_settings(cfg: DictConfig, name: str) -> list[str]:
    """An entry's training overrides without the seed (what decides whether a run is reused)."""
    return [*entry_overrides(cfg, name), *budget_overrides(cfg)]


def _reusable(cfg: DictConfig, name: str, seed: int, settings: list[str]) -> bool:
    d = run_dir(cfg, name, seed)
    marker = d.with_name(d.name + ".board.json")  # beside the run: written before it starts
    return (d / "metrics.json").is_file() and marker.is_file() and \
        json.loads(marker.read_text()) == [*settings, f"seed={seed}"]


def finished(cfg: DictConfig, name: str, seed: int) -> bool:
    """Whether ``output_dir`` holds a finished run of this entry and seed with the board's settings."""
    return _reusable(cfg, name, seed, run_settings(cfg, name))


def _refuse_other_settings(cfg: DictConfig, name: str, seed: int, settings: list[str]) -> None:
    """A finished run of other settings is the user's work: never deleted to train over it."""
    d = run_dir(cfg, name, seed)
    marker = d.with_name(d.name + ".board.json")
    if not (d / "metrics.json").is_file() or _reusable(cfg, name, seed, settings):
        return
    had = json.loads(marker.read_text()) if marker.is_file() else []
    changed = [o for o in [*settings, f"seed={seed}"] if o not in had][:3]
    raise ConfigError(f"{d} holds a finished run of other settings (this board has {', '.join(changed)}); "
                      "use another output_dir, or delete it to train it again")


def _train_command(cfg: DictConfig, name: str, settings: list[str], seeds: list[int]) -> list[str]:
    return [sys.executable, "-m", "musicgen.train", "-m", *settings, f"seed={','.join(map(str, seeds))}",
            *cfg.launcher, f"hydra.sweep.dir={Path(cfg.output_dir) / 'runs'}", f"hydra.sweep.subdir={name}_s${{seed}}"]


def _failed(cfg: DictConfig, name: str, seed: int) -> UserError:
    return UserError(f"training {name} failed; see {run_dir(cfg, name, seed)}/train.log, "
                     "then run the same command again (finished runs are kept)")


def train_and_evaluate(cfg: DictConfig, names: list[str]) -> dict[str, list[str]]:
    """Train every seed of every entry that is not finished, then evaluate every run not evaluated
    with the board's settings (``evaluate_entries``); returns each entry's settings."""
    settings = train_entries(cfg, names)
    evaluate_entries(cfg, names)
    return settings


def train_entries(cfg: DictConfig, names: list[str], evaluate: bool = True) -> dict[str, list[str]]:
    """Train every seed of every entry that is not finished (an unfinished run starts over; a
    finished run of other settings is refused, never deleted); ``data.seed`` is pinned in ``common``, so every
    seed and entry sees one split. ``parallel=1``: one multirun per entry over its missing seeds;
    ``parallel=n``: n runs at once, each one process with the usable cores shared out among them
    (``OMP_NUM_THREADS``; small networks use 2 cores poorly, so two one-thread runs do nearly twice
    the work of one two-thread run), and each run's evaluation (``evaluate_entries``) is taken up as
    soon as it has trained, beside the training still to do (``evaluate=False``: none, for the cost
    probe of ``estimate``). Returns each entry's settings."""
    all_settings, jobs, t0 = {}, [], time.perf_counter()
    for name in names:
        settings = all_settings[name] = run_settings(cfg, name)
        for s in range(cfg.seeds):
            _refuse_other_settings(cfg, name, s, settings)
    for name in names:
        settings = all_settings[name]
        missing = [s for s in range(cfg.seeds) if not _reusable(cfg, name, s, settings)]
        if not missing:
            log.info("%s: %d finished runs reused", name, cfg.seeds)
        for s in missing:
            d = run_dir(cfg, name, s)
            shutil.rmtree(d, ignore_errors=True)
            atomic_write_text(d.with_name(d.name + ".board.json"), json.dumps([*settings, f"seed={s}"]))
            jobs.append((name, s))
    parallel = int(cfg.get("parallel") or 1)
    if parallel < 1:
        raise ConfigError(f"parallel={parallel} must be >= 1")
    if parallel == 1:
        for i, name in enumerate(dict.fromkeys(n for n, _ in jobs), 1):
            seeds = [s for n, s in jobs if n == name]
            log.info("%s (%d of %d entries to train, %.0f min in): training seeds %s for %.3g notes each", name, i,
                     len({n for n, _ in jobs}), (time.perf_counter() - t0) / 60, seeds, cfg.budget.notes)
            if subprocess.run(_train_command(cfg, name, all_settings[name], seeds)).returncode != 0:
                raise _failed(cfg, name, seeds[0])
            for s in seeds:
                _log_trained(cfg, name, s)
        return all_settings
    env = _shared_cores(parallel)
    # trained runs waiting for their evaluation (taken first): a resumed board's finished ones, then each as it ends
    evaluations = [(n, s) for n in names for s in range(cfg.seeds)
                   if evaluate and (n, s) not in jobs and _evaluation_missing(cfg, n, s)]
    running: list[tuple[str, int, bool, subprocess.Popen]] = []  # (entry, seed, an evaluation?, process)
    trained = 0
    while jobs or evaluations or running:
        while (jobs or evaluations) and len(running) < parallel:
            if evaluations:
                name, s = evaluations.pop(0)
                running.append((name, s, True, _start_evaluation(cfg, name, s, env)))
                continue
            name, s = jobs.pop(0)
            log.info("%s seed %d (%d of %d runs to train, %d at once, %.0f min in): training for %.3g notes", name,
                     s, trained + 1, trained + len(jobs) + 1, parallel, (time.perf_counter() - t0) / 60,
                     cfg.budget.notes)
            trained += 1
            running.append((name, s, False, subprocess.Popen(_train_command(cfg, name, all_settings[name], [s]),
                                                             env=env)))
        time.sleep(1)
        for job in [j for j in running if j[3].poll() is not None]:
            running.remove(job)
            name, s, is_evaluation, proc = job
            if proc.returncode != 0:
                for *_, p in running:  # the others stop too: their runs start over on the next try
                    p.terminate()
                raise _evaluation_failed(cfg, name, s) if is_evaluation else _failed(cfg, name, s)
            if is_evaluation:
                _evaluated(cfg, name, s)
                continue
            _log_trained(cfg, name, s)
            if evaluate and _evaluation_missing(cfg, name, s):
                evaluations.append((name, s))
    return all_settings


def _log_trained(cfg: DictConfig, name: str, s: int) -> None:
    """One line per trained run: where it stopped, its training time, and the convergence rule's verdict."""
    points = curve(run_dir(cfg, name, s))
    if points:
        c = converged(points, float(cfg.budget.notes), cfg.budget.tolerance)
        log.info("%s seed %d trained: %s notes in %.0f s of training; %s (%s)", name, s,
                 f"{points[-1]['notes']:,.0f}", points[-1]["seconds"], "converged" if c["converged"] else
                 "not converged", c["reason"])


def _shared_cores(parallel: int) -> dict[str, str]:
    """The environment of one of ``parallel`` processes sharing the usable cores."""
    return {**os.environ, "OMP_NUM_THREADS": str(max(1, usable_cores() // parallel))}


def evaluation_settings(cfg: DictConfig, name: str) -> dict[str, Any]:
    """The ``musicgen.evaluate`` settings of an entry's runs: the test split and ``evaluate``, plus
    the shifts of every claim on the entry that is judged on transposed test pieces (``transpose``)."""
    wanted = {"split": "test", **OmegaConf.to_container(cfg.evaluate)}
    shifts = sorted({int(v) for c in cfg.claims if c.get("transpose") and name in (c.get("contrast") or {})
                     for v in c.transpose})
    if shifts:
        wanted["transpose"] = f"[{','.join(map(str, shifts))}]"
    return wanted


def evaluate_entries(cfg: DictConfig, names: list[str]) -> None:
    """``musicgen.evaluate`` on the test split for every run without an evaluation of these
    settings, one at a time (with ``parallel`` above 1, ``train_entries`` has already evaluated
    each run beside the training and nothing is left here)."""
    for name in names:
        for s in range(cfg.seeds):
            if _evaluation_missing(cfg, name, s):
                if _start_evaluation(cfg, name, s, dict(os.environ)).wait() != 0:
                    raise _evaluation_failed(cfg, name, s)
                _evaluated(cfg, name, s)


def _evaluation_marker(cfg: DictConfig, name: str, s: int) -> Path:
    return run_dir(cfg, name, s) / "board_evaluation.json"  # written once an evaluation of these settings is complete


def _evaluation_missing(cfg: DictConfig, name: str, s: int) -> bool:
    marker = _evaluation_marker(cfg, name, s)
    return not (marker.is_file() and json.loads(marker.read_text()) == evaluation_settings(cfg, name))


def _start_evaluation(cfg: DictConfig, name: str, s: int, env: dict[str, str]) -> subprocess.Popen:
    log.info("%s seed %d: evaluating", name, s)
    wanted = evaluation_settings(cfg, name)
    return subprocess.Popen([sys.executable, "-m", "musicgen.evaluate", f"ckpt_path={run_dir(cfg, name, s)}",
                             *(f"{k}={v}" for k, v in wanted.items())], env=env)


def _evaluated(cfg: DictConfig, name: str, s: int) -> None:
    atomic_write_text(_evaluation_marker(cfg, name, s), json.dumps(evaluation_settings(cfg, name)))


def _evaluation_failed(cfg: DictConfig, name: str, s: int) -> UserError:
    return UserError(f"evaluating {run_dir(cfg, name, s)} failed (its error is printed above); "
                     "run the same command again (finished runs and evaluations are kept)")


def load_run(d: Path) -> dict[str, Any]:
    with np.load(d / "evaluation_pieces.npz") as z:
        pieces = {k: z[k] for k in z.files}
    return {"dir": d, "metrics": json.loads((d / "metrics.json").read_text()),
            "evaluation": json.loads((d / "evaluation.json").read_text()), "pieces": pieces,
            "config": OmegaConf.to_container(OmegaConf.load(d / "config.yaml")), "curve": curve(d)}
