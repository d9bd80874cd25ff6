"""Training and evaluating the board's runs (reused when finished with the same settings), and
reading back what the board needs from each: its metrics, evaluation, per-piece statistics, curve."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from musicgen.errors import ConfigError, UserError
from musicgen.evaluation.run import evaluate
from musicgen.experiments.leaderboard.protocol import budget_overrides, curve, entry_overrides
from musicgen.fs import atomic_write_text

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


def train_entries(cfg: DictConfig, names: list[str]) -> dict[str, list[str]]:
    """One multirun per entry over the seeds it still lacks (or trained with other settings);
    ``data.seed`` is pinned in ``common``, so every seed and entry sees one split. Returns each
    entry's settings."""
    all_settings, t0 = {}, time.perf_counter()
    for i, name in enumerate(names, 1):
        settings = all_settings[name] = run_settings(cfg, name)
        missing = [s for s in range(cfg.seeds) if not _reusable(cfg, name, s, settings)]
        if not missing:
            log.info("%s: %d finished runs reused", name, cfg.seeds)
            continue
        for s in missing:  # an unfinished run, or one of other settings, starts over
            d = run_dir(cfg, name, s)
            shutil.rmtree(d, ignore_errors=True)
            atomic_write_text(d.with_name(d.name + ".board.json"), json.dumps([*settings, f"seed={s}"]))
        cmd = [sys.executable, "-m", "musicgen.train", "-m", *settings, f"seed={','.join(map(str, missing))}",
               *cfg.launcher, f"hydra.sweep.dir={Path(cfg.output_dir) / 'runs'}",
               f"hydra.sweep.subdir={name}_s${{seed}}"]
        log.info("%s (entry %d of %d, %.0f min in): training seeds %s for %.3g notes each", name, i, len(names),
                 (time.perf_counter() - t0) / 60, missing, cfg.budget.notes)
        if subprocess.run(cmd).returncode != 0:
            raise UserError(f"training {name} failed; see {run_dir(cfg, name, missing[0])}/train.log, "
                            "then run the same command again (finished runs are kept)")
    return all_settings


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
    """``musicgen.evaluate`` on the test split for every run without an evaluation of these settings."""
    for name in names:
        wanted = evaluation_settings(cfg, name)
        for s in range(cfg.seeds):
            d = run_dir(cfg, name, s)
            marker = d / "board_evaluation.json"  # written once an evaluation with these settings is complete
            if marker.is_file() and json.loads(marker.read_text()) == wanted:
                continue
            log.info("%s seed %d: evaluating", name, s)
            try:
                evaluate(hydra.compose("evaluate", [f"ckpt_path={d}", *(f"{k}={v}" for k, v in wanted.items())]))
            except UserError as e:
                raise UserError(f"evaluating {d} failed: {e}") from e
            atomic_write_text(marker, json.dumps(wanted))


def load_run(d: Path) -> dict[str, Any]:
    with np.load(d / "evaluation_pieces.npz") as z:
        pieces = {k: z[k] for k in z.files}
    return {"dir": d, "metrics": json.loads((d / "metrics.json").read_text()),
            "evaluation": json.loads((d / "evaluation.json").read_text()), "pieces": pieces,
            "config": OmegaConf.to_container(OmegaConf.load(d / "config.yaml")), "curve": curve(d)}
