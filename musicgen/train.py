"""Training entry point: ``python -m musicgen.train +version=v7 [preset=cpu] [key=value ...]``.

``train(cfg)`` checks what it can without data (``preflight``), then instantiates, in a fixed
order, the tokeniser, the DataModule (which prepares the data and trains the tokeniser), the
network, the LightningModule, callbacks, loggers and the Trainer; fits; and writes
``metrics.json``. It returns the metrics so sweepers can use them.

Continuing a run:
- ``resume=true hydra.run.dir=<run dir>`` continues that run, in that directory, from its
  ``checkpoints/last.ckpt`` (pass the run's other overrides again too);
- ``ckpt_path=<run dir or .ckpt>`` continues from that checkpoint in a new run directory.
Either way training goes on exactly where the checkpoint left it (weights, optimizer, schedule,
step, RNG and data order), and is refused if the tokeniser or the data split has changed.
``last.ckpt`` is written every ``callbacks.resume_checkpoint.every_n_train_steps`` optimizer
steps, at every validation, and on SIGTERM / Ctrl-C (see ``musicgen/lit/callbacks.py``).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from musicgen.checkpoint import ProvenanceError, check_provenance, provenance
from musicgen.config import check_config, version_as_choice
from musicgen.lit.callbacks import ResumeCheckpoint
from musicgen.metrics.ngram import UnigramLM
from musicgen.midi_io import atomic_write_text

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A setting that cannot work; the message says what to change. Raised before training."""


class TrainingInterrupted(Exception):
    """SIGTERM or Ctrl-C stopped training after a checkpoint was written."""

    def __init__(self, signum: int, ckpt_path: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint {ckpt_path}")
        self.signum, self.ckpt_path = signum, ckpt_path


# ----------------------------------------------------------------------------- checks

def resolve_ckpt_path(cfg: DictConfig) -> str | None:
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


def build(what: str, cfg: Any, **kwargs: Any) -> Any:
    """``instantiate(cfg)``; a constructor's ``ValueError``/``TypeError`` (a setting it rejects)
    becomes a one-line ``ConfigError`` naming the config group."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, (TypeError, ValueError)):
            msg = str(e.__cause__)
            raise ConfigError(msg if msg.startswith(f"{what}.") else f"{what}: {msg}") from e
        raise


def preflight(cfg: DictConfig) -> str | None:
    """Checks that need no data, so a mistake fails in seconds rather than after data
    preparation. Returns the checkpoint to resume from, if any."""
    from musicgen.data.corpus import DataPathError, require_dir
    from musicgen.generation import SamplingConfig

    ckpt_path = resolve_ckpt_path(cfg)
    try:
        SamplingConfig(**cfg.sampling)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"sampling: {e}") from e
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["vocab_size"] = model_cfg.get("vocab_size") or 512  # the real one comes from the tokeniser
    with torch.device("meta"):  # shapes only: no memory, no time
        build("model", model_cfg)
    for key, example, what in (
        ("root", "/path/to/your/midi", "a folder of .mid/.midi files"),
        ("maestro_root", "/path/to/maestro-v3.0.0", "the unpacked MAESTRO v3 folder"),
    ):
        if cfg.data.get(key) is not None:
            try:
                require_dir(cfg.data[key], f"data.{key}", example, what)
            except DataPathError as e:
                raise ConfigError(str(e)) from e
    return ckpt_path


def resolve_vocab(cfg: DictConfig, tokenizer_vocab: int) -> int:
    """The model's vocabulary: the tokeniser's, or a configured number that must agree with it."""
    wanted = cfg.model.get("vocab_size")
    if wanted is not None and wanted != tokenizer_vocab:
        raise ConfigError(
            f"model.vocab_size={wanted} disagrees with the tokeniser's vocabulary of {tokenizer_vocab}; "
            "set model.vocab_size=null to take the tokeniser's size"
        )
    return tokenizer_vocab


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
    from musicgen.checkpoint import read_metadata

    saved = read_metadata(ckpt_path)
    if not saved.get("provenance"):
        raise ProvenanceError(f"{ckpt_path} records no tokeniser or split hashes, so it cannot be checked against this data")
    check_provenance(saved["provenance"], metadata["provenance"], ckpt_path, "resume from")
    before, after = _flatten(saved.get("config", {})), _flatten(metadata["config"])
    changed = sorted(k for k in before.keys() | after.keys()
                     if before.get(k) != after.get(k) and k.split(".")[0] not in ("paths", "resume", "ckpt_path"))
    model = [k for k in changed if k.startswith("model.")]
    if model:
        raise ConfigError(
            f"cannot resume from {ckpt_path}: the model differs ("
            + ", ".join(f"{k}={before.get(k)!r} there, {after.get(k)!r} now" for k in model)
            + "); pass the run's original overrides"
        )
    if changed:
        log.warning("resuming with settings that differ from the checkpoint's: %s",
                    ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed))


# ----------------------------------------------------------------------------- training

def unigram_val_ppl(dm) -> float:
    """Validation perplexity of a unigram model fitted on the training tokens: the floor to beat."""
    splits = dm.cache.splits
    lm = UnigramLM(dm.tokenizer.vocab_size).fit([np.asarray(splits["train"].tokens)])
    return float(lm.perplexity([np.asarray(splits["val"].tokens)]))


def _final_metrics(trainer: L.Trainer, ckpt_cb, extra: dict[str, Any]) -> dict[str, Any]:
    m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    out = {
        "train_loss": m.get("train/loss_epoch", m.get("train/loss")),
        "val_loss": m.get("val/loss"),
        "val_ppl": m.get("val/ppl"),
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        out["best_val_loss"] = float(ckpt_cb.best_model_score)
        out["best_val_ppl"] = float(np.exp(out["best_val_loss"]))
        out["best_ckpt"] = ckpt_cb.best_model_path
    out.update(extra)
    return out


@rank_zero_only
def _tidy_run_dir(out_dir: Path) -> None:
    """Before a run starts in a directory that already has one (a resume): keep the previous
    ``metrics.csv`` (the CSV logger would delete it) and drop temporary files of checkpoint
    writes a kill interrupted (never trusted, but as large as a checkpoint)."""
    for csv in out_dir.rglob("metrics.csv"):
        i = 1
        while csv.with_name(f"metrics.part{i}.csv").exists():
            i += 1
        csv.rename(csv.with_name(f"metrics.part{i}.csv"))
        log.info("kept the previous %s as %s", csv, csv.with_name(f"metrics.part{i}.csv").name)
    for tmp in (out_dir / "checkpoints").glob(".*.tmp"):
        log.info("removing %s, left by an interrupted checkpoint write", tmp)
        tmp.unlink()


def train(cfg: DictConfig) -> dict[str, Any]:
    ckpt_path = preflight(cfg)
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _tidy_run_dir(out_dir)

    tokenizer = build("tokenizer", cfg.tokenizer)
    datamodule = build("data", cfg.data, tokenizer=tokenizer)
    datamodule.setup("fit")  # builds the token cache (or loads the matching one); Lightning's later
    # prepare_data/setup calls are then no-ops
    tokenizer = datamodule.tokenizer  # trained (or loaded from the matching cache)
    tokenizer_text = datamodule.cache.tokenizer_path.read_text(encoding="utf-8")
    atomic_write_text(out_dir / "tokenizer.json", tokenizer_text)

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["vocab_size"] = resolve_vocab(cfg, tokenizer.vocab_size)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    metadata = {
        "version": cfg.version.name,
        "model": model_cfg,
        "objective": cfg.objective.name,
        "tokenizer_file": "tokenizer.json",
        "tokenizer": tokenizer_text,
        "seq_len": cfg.data.seq_len,
        "cache_path": str(datamodule.cache.path),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": provenance(tokenizer_text, datamodule.cache.meta, config_yaml),
    }
    if ckpt_path is not None:
        check_resume(ckpt_path, metadata)
    net = instantiate(model_cfg)
    module = instantiate(cfg.objective.module)(net=net, metadata=metadata, **OmegaConf.to_container(cfg.optim))

    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    atomic_write_text(out_dir / "config.yaml", config_yaml)
    # Two false alarms on resume: the DataModule resumes an interrupted epoch at the right batch
    # itself (its state_dict), and _tidy_run_dir has moved the metrics.csv the CSV logger would delete.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException as e:
        stopper = next((c for c in callbacks if isinstance(c, ResumeCheckpoint)), None)
        signum = stopper.signal if stopper is not None and stopper.signal else signal.SIGTERM
        raise TrainingInterrupted(signum, out_dir / "checkpoints" / "last.ckpt") from e

    ckpt_cb = next((c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)), None)
    stats = datamodule.datasets["train"].target_stats()
    metrics = _final_metrics(
        trainer,
        ckpt_cb,
        {
            "version": cfg.version.name,
            "vocab_size": tokenizer.vocab_size,
            "n_params": sum(p.numel() for p in net.parameters()),
            "unigram_val_ppl": unigram_val_ppl(datamodule),
            "train_windows": stats["windows"],
            "train_target_pad_share": stats["pad_share"],
            "train_target_separator_share": stats["separator_share"],
        },
    )
    if trainer.is_global_zero:
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
        log.info("metrics: %s", json.dumps(metrics))
    return metrics


def resume_command(overrides: list[str] | tuple[str, ...], run_dir: Path | str) -> str:
    """The command line that continues this run."""
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("resume", "ckpt_path", "hydra.run.dir")]
    return " ".join(["python -m musicgen.train", *keep, "resume=true", f"hydra.run.dir={run_dir}"])


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().overrides.task
    try:
        check_config(cfg)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    try:
        metrics = train(cfg)
    except (ConfigError, ProvenanceError) as e:
        raise SystemExit(f"error: {e}") from e
    except FloatingPointError as e:
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        kept = f"; the last good checkpoint is {last}" if last.is_file() else ""
        raise SystemExit(f"error: {e}{kept}") from e
    except TrainingInterrupted as e:
        log.warning("%s. Continue with:\n  %s", e, resume_command(overrides, cfg.paths.output_dir))
        raise SystemExit(128 + e.signum) from e
    return metrics.get(cfg.optimized_metric.replace("/", "_"))


def main() -> None:
    sys.argv[1:] = version_as_choice(sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
