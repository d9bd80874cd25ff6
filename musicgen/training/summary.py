"""What a finished fit reports in ``metrics.json``: final and best losses, step counts, the
unigram floor, the parameter count and what the training windows were made of."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
from torch import nn

from musicgen.metrics.ngram import UnigramLM


def unigram_val_ppl(datamodule) -> float:
    """Validation perplexity of a unigram model fitted on the training tokens: the floor to beat."""
    splits = datamodule.cache.splits
    lm = UnigramLM(datamodule.tokenizer.vocab_size).fit([np.asarray(splits["train"].tokens)])
    return float(lm.perplexity([np.asarray(splits["val"].tokens)]))


def fit_summary(trainer: L.Trainer, datamodule, net: nn.Module, version: str) -> dict[str, Any]:
    m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    out: dict[str, Any] = {
        "train_loss": m.get("train/loss_epoch", m.get("train/loss")),
        "val_loss": m.get("val/loss"),
        "val_ppl": m.get("val/ppl"),
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    best = trainer.checkpoint_callback
    if best is not None and best.best_model_score is not None:
        out["best_val_loss"] = float(best.best_model_score)
        out["best_val_ppl"] = float(np.exp(out["best_val_loss"]))
        out["best_ckpt"] = best.best_model_path
    stats = datamodule.datasets["train"].target_stats()
    windows_per_step = datamodule.batch_size * trainer.accumulate_grad_batches * trainer.world_size
    targets_per_window = 1 if datamodule.mode == "seq2one" else datamodule.seq_len
    out.update(
        train_target_tokens=trainer.global_step * windows_per_step * targets_per_window,
        version=version,
        vocab_size=datamodule.tokenizer.vocab_size,
        n_params=sum(p.numel() for p in net.parameters()),
        unigram_val_ppl=unigram_val_ppl(datamodule),
        train_windows=stats["windows"],
        train_target_pad_share=stats["pad_share"],
        train_target_separator_share=stats["separator_share"],
    )
    return out
