"""Training entry point: ``python -m musicgen.train +version=v7 [preset=cpu] [key=value ...]``.

``train(cfg)`` instantiates, in a fixed order, the tokeniser, the DataModule (which prepares
the data and trains the tokeniser), the network, the LightningModule, callbacks, loggers and
the Trainer; fits; and writes ``metrics.json``. It returns the metrics so sweepers can use them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from musicgen.config import apply_preset, check_config
from musicgen.metrics.ngram import UnigramLM
from musicgen.midi_io import atomic_write_text

log = logging.getLogger(__name__)


def resolve_vocab(cfg: DictConfig, tokenizer_vocab: int) -> int:
    """The model's vocabulary: the tokeniser's, or a configured number that must agree with it."""
    wanted = cfg.model.get("vocab_size")
    if wanted is not None and wanted != tokenizer_vocab:
        raise ValueError(
            f"model.vocab_size={wanted} disagrees with the tokeniser's vocabulary of {tokenizer_vocab}; "
            "set model.vocab_size=null to take the tokeniser's size"
        )
    return tokenizer_vocab


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


def train(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = instantiate(cfg.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    tokenizer = datamodule.tokenizer  # trained (or loaded from the matching cache)
    tokenizer.save(out_dir / "tokenizer.json")

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["vocab_size"] = resolve_vocab(cfg, tokenizer.vocab_size)
    net = instantiate(model_cfg)
    metadata = {
        "version": cfg.version.name,
        "model": model_cfg,
        "objective": cfg.objective.name,
        "tokenizer_file": "tokenizer.json",
        "tokenizer": (out_dir / "tokenizer.json").read_text(),
        "seq_len": cfg.data.seq_len,
        "cache_path": str(datamodule.cache.path),
    }
    module = instantiate(cfg.objective.module)(net=net, metadata=metadata, **cfg.optim)

    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg))

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


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path`` may be a checkpoint file or a run directory (its ``checkpoints/last.ckpt``)."""
    if cfg.get("ckpt_path") is None:
        return None
    p = Path(cfg.ckpt_path)
    if p.is_dir():
        p = p / "checkpoints" / "last.ckpt"
    if not p.exists():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no checkpoint at {p}")
    return str(p)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    apply_preset(cfg, HydraConfig.get().overrides.task)
    check_config(cfg)
    metrics = train(cfg)
    return metrics.get(cfg.optimized_metric.replace("/", "_"))


if __name__ == "__main__":
    main()
