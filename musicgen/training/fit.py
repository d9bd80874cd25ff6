"""Training entry point: ``python -m musicgen.train +version=v7 [preset=cpu] [key=value ...]``.

``train(cfg)`` checks everything it can without data (``musicgen.training.preflight``, which also
builds the tokeniser and the DataModule), prepares the data (and trains the tokeniser), then
instantiates the network, the LightningModule, callbacks, loggers and the Trainer; fits; and
writes ``metrics.json``. It returns the metrics so sweepers can use them. A ``UserError`` is one
``error: ...`` line (``musicgen.errors.user_errors``).

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
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from musicgen.checkpoint.provenance import provenance
from musicgen.checkpoint.run import RunMetadata
from musicgen.fs import atomic_write_text
from musicgen.training.callbacks import ResumeCheckpoint
from musicgen.training.preflight import preflight, resolve_bar_position, resolve_vocab
from musicgen.training.resume import TrainingInterrupted, check_resume, tidy_run_dir
from musicgen.training.summary import fit_summary

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    checked = preflight(cfg)
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank_zero_only(tidy_run_dir)(out_dir)

    datamodule = checked.datamodule
    datamodule.setup("fit")  # builds the token cache (or loads the matching one); Lightning's later
    # prepare_data/setup calls are then no-ops
    tokenizer = datamodule.tokenizer  # trained (or loaded from the matching cache)
    tokenizer_text = datamodule.cache.tokenizer_path.read_text(encoding="utf-8")
    atomic_write_text(out_dir / "tokenizer.json", tokenizer_text)

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["vocab_size"] = resolve_vocab(cfg, tokenizer.vocab_size)
    bar_tables = resolve_bar_position(model_cfg, tokenizer)  # None unless model.bar_position
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    # what every checkpoint stores (checkpoint["musicgen"]), written here only: a conditioned or
    # infilling run's vocabulary comes from the DataModule, which built it in setup
    extra = datamodule.checkpoint_metadata
    metadata = RunMetadata(
        version=cfg.version.name, model=model_cfg, objective=cfg.objective.name, seq_len=cfg.data.seq_len,
        config=OmegaConf.to_container(cfg, resolve=True),
        provenance=provenance(tokenizer_text, datamodule.cache.meta, config_yaml),
        tokenizer=tokenizer_text, tokenizer_file="tokenizer.json", cache_path=str(datamodule.cache.path),
        conditioning=extra.get("conditioning"), infill=extra.get("infill"),
    ).to_dict()
    if checked.ckpt_path is not None:
        check_resume(checked.ckpt_path, metadata)
    net = instantiate(model_cfg)
    if bar_tables is not None:
        net.set_bar_tables(*(torch.from_numpy(t) for t in bar_tables))
    module = instantiate(cfg.objective.module)(net=net, metadata=metadata, **OmegaConf.to_container(cfg.optim))

    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    atomic_write_text(out_dir / "config.yaml", config_yaml)
    # Two false alarms on resume: the DataModule resumes an interrupted epoch at the right batch
    # itself (its state_dict), and tidy_run_dir has moved the metrics.csv the CSV logger would delete.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checked.ckpt_path)
    except SIGTERMException as e:
        stopper = next((c for c in callbacks if isinstance(c, ResumeCheckpoint)), None)
        signum = stopper.signal if stopper is not None and stopper.signal else signal.SIGTERM
        raise TrainingInterrupted(signum, out_dir / "checkpoints" / "last.ckpt") from e

    metrics = fit_summary(trainer, datamodule, net, cfg.version.name)
    if trainer.is_global_zero:
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
        log.info("metrics: %s", json.dumps(metrics))
    return metrics
