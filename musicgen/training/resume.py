"""Continuing a run from a checkpoint: which checkpoint, whether it fits (tokeniser, split, model),
the run directory, and the command that continues it."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

from musicgen.checkpoint import read_metadata
from musicgen.checkpoint.provenance import check_provenance
from musicgen.errors import ConfigError, ProvenanceError

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """SIGTERM or Ctrl-C stopped training after a checkpoint was written."""

    def __init__(self, signum: int, ckpt_path: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint {ckpt_path}")
        self.signum, self.ckpt_path = signum, ckpt_path

def resolve_ckpt_path(cfg) -> str | None:
    """The checkpoint to continue from: ``resume=true`` takes this run directory's ``last.ckpt``;
    ``ckpt_path`` may be a checkpoint file or a run directory (its ``checkpoints/last.ckpt``)."""
    if cfg.get("resume"):
        if cfg.get("ckpt_path") is not None:
            raise ConfigError("set either resume=true (continue this run directory) or ckpt_path=..., not both")
        p = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not p.is_file():
            raise ConfigError(
                f"resume=true: no checkpoint at {p}; name the run to continue with "
                "hydra.run.dir=outputs/train/<version>/<run>, or use ckpt_path=<run dir or .ckpt>"
            )
        return str(p)
    if cfg.get("ckpt_path") is None:
        return None
    p = Path(cfg.ckpt_path)
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no checkpoint at {p}")
    return str(p)

def _same_network(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    """Whether two model configs (``_target_`` and fields) build the same network once the
    fields either lacks take the model's defaults (a model option added since the checkpoint)."""
    import inspect

    from hydra.utils import get_class

    if not before or not after or before.get("_target_") != after.get("_target_"):
        return False
    try:
        params = inspect.signature(get_class(before["_target_"])).parameters.values()
    except Exception:  # an unknown target: compare as written
        return before == after
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**defaults, **before} == {**defaults, **after}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

def check_resume(ckpt_path: str, metadata: dict[str, Any]) -> None:
    """Refuse to continue a checkpoint with another tokeniser, data split or model; list the
    other settings that changed (a longer schedule is fine; a different optimiser may not be)."""
    saved = read_metadata(ckpt_path)
    if not saved.get("provenance"):
        raise ProvenanceError(
            f"{ckpt_path} records no tokeniser or split hashes, so it cannot be checked against this data"
        )
    check_provenance(saved["provenance"], metadata["provenance"], ckpt_path, "resume from")
    before, after = _flatten(saved.get("config", {})), _flatten(metadata["config"])
    changed = sorted(k for k in before.keys() | after.keys()
                     if before.get(k) != after.get(k) and k.split(".")[0] not in ("paths", "resume", "ckpt_path"))
    model = [k for k in changed if k.startswith("model.")]
    if model and _same_network(saved.get("model"), metadata.get("model")):
        model = []  # e.g. an option added since, at its default: the same network
    if model:
        raise ConfigError(
            f"cannot resume from {ckpt_path}: the model differs ("
            + ", ".join(f"{k}={before.get(k)!r} there, {after.get(k)!r} now" for k in model)
            + "); pass the run's original overrides"
        )
    if changed:
        log.warning("resuming with settings that differ from the checkpoint's: %s",
                    ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed))

def tidy_run_dir(out_dir: Path) -> None:
    """Before a run starts in a directory that already has one (a resume; call on rank 0 only):
    keep the previous ``metrics.csv`` (the CSV logger would delete it) and drop temporary files of
    checkpoint writes a kill interrupted (never trusted, but as large as a checkpoint)."""
    for csv in out_dir.rglob("metrics.csv"):
        i = 1
        while csv.with_name(f"metrics.part{i}.csv").exists():
            i += 1
        csv.rename(csv.with_name(f"metrics.part{i}.csv"))
        log.info("kept the previous %s as %s", csv, csv.with_name(f"metrics.part{i}.csv").name)
    for tmp in (out_dir / "checkpoints").glob(".*.tmp"):
        log.info("removing %s, left by an interrupted checkpoint write", tmp)
        tmp.unlink()

def resume_command(overrides: list[str] | tuple[str, ...], run_dir: Path | str) -> str:
    """The command line that continues this run."""
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("resume", "ckpt_path", "hydra.run.dir")]
    return " ".join(["python -m musicgen.train", *keep, "resume=true", f"hydra.run.dir={run_dir}"])
