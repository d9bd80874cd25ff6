"""LightningModules: one per training objective. They take the network as an argument and own
loss, metrics, logging and optimisation; they know nothing of MIDI or tokenisers."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.aggregation import MeanMetric

from musicgen.constants import IGNORE_INDEX
from musicgen.errors import ConfigError
from musicgen.training.optim import build_optimizer

log = logging.getLogger(__name__)


class LanguageModelModule(L.LightningModule):
    """Shared training loop; subclasses define ``loss_sum(x, y) -> (sum of nats, n targets)``.

    Args:
        net: a ``musicgen.models`` network.
        lr, weight_decay, betas, warmup_steps, min_lr_ratio: AdamW with linear warmup then cosine decay.
        name, muon_lr, schedule, decay_frac: ``musicgen.training.optim.build_optimizer``'s
            options (Muon on the blocks' matrices; the warmup-stable-decay schedule).
        z_loss: weight of PaLM's auxiliary loss ``log(Z)^2`` per target (training only; 0: off).
        metadata: opaque dict stored in every checkpoint (model config, tokeniser, version, ...)
            so a checkpoint alone is enough to generate later.
    """

    objective: str = ""

    def __init__(
        self,
        net: nn.Module,
        lr: float = 3e-4,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        name: str = "adamw",
        muon_lr: float | None = None,
        schedule: str = "cosine",
        decay_frac: float = 0.2,
        z_loss: float = 0.0,
        compile: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "metadata"])
        self.net = net
        # torch.compile'd forward for training and validation; a plain dict, so it adds no
        # state_dict keys, and self.net stays eager for sampling (whose shapes vary every step)
        self._compiled: dict[str, Any] = {}
        self.metadata = dict(metadata or {})
        self.train_loss = MeanMetric()
        self.train_loss.persistent(True)  # in checkpoints: a resumed epoch's mean covers all its batches
        self.val_loss = MeanMetric()  # token-weighted mean over the whole validation set
        if not z_loss >= 0:
            raise ConfigError(f"optim.z_loss={z_loss!r} must be >= 0")
        self._z_sum: torch.Tensor | None = None  # this training step's sum of log(Z)^2, from loss_sum

    def setup(self, stage: str) -> None:
        if self.hparams.compile and "net" not in self._compiled:
            self._compiled["net"] = torch.compile(self.net)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self._compiled.get("net", self.net)(x, **kwargs)

    def loss_sum(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _step(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        total, n = self.loss_sum(x, y)
        return total / n.clamp(min=1), n

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self._z_sum = None
        loss, n = self._step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); training stopped before this step's "
                "update: lower optim.lr, or use trainer.precision=32-true"
            )
        self.train_loss.update(loss.detach(), n)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        if self._z_sum is not None:  # train/loss stays the cross-entropy; the z-loss is added to what is optimised
            z = self._z_sum / n.clamp(min=1)
            self.log("train/z_loss", z, on_step=True, on_epoch=False)
            loss = loss + self.hparams.z_loss * z
        return loss

    def _note_z_loss(self, logits: torch.Tensor) -> None:
        """PaLM's z-loss (Chowdhery et al. 2022, section 5): ``log(Z)^2`` of the scored
        positions' logits (N, V) pushes the softmax normaliser towards 1; training only."""
        if self.training and self.hparams.z_loss:
            self._z_sum = logits.float().logsumexp(-1).square().sum()

    def on_train_epoch_end(self) -> None:
        with warnings.catch_warnings():
            # resumed from a checkpoint written at validation end, the running mean comes from the
            # checkpoint, not from update() calls in this process, and torchmetrics warns
            warnings.filterwarnings("ignore", message="The ``compute`` method of metric MeanMetric was called before")
            self.log("train/loss_epoch", self.train_loss.compute())
        self.train_loss.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        # in fp32 whatever the training precision: val/loss is the number evaluation reports for
        # the same checkpoint (musicgen.evaluate scores in fp32), and best.ckpt is chosen by it
        with torch.autocast(self.device.type, enabled=False):
            loss, n = self._step(batch)
        self.val_loss.update(loss, n)

    def on_train_start(self) -> None:
        self._train_start = time.monotonic()

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", torch.exp(loss), prog_bar=True)
        if hasattr(self, "_train_start"):  # seconds of this process's training, for curves against wall time
            self.log("time/train_seconds", float(time.monotonic() - self._train_start))

    def configure_optimizers(self):
        total = int(self.trainer.estimated_stepping_batches)
        h = self.hparams
        if h.warmup_steps >= total:
            log.warning(
                "optim.warmup_steps=%d >= %d optimizer steps in this run: the peak lr is never reached",
                h.warmup_steps, total,
            )
        opt, sched = build_optimizer(
            self.net, total, h.lr, h.weight_decay, h.betas, h.warmup_steps, h.min_lr_ratio,
            fused=not self._scales_gradients(), name=h.name, muon_lr=h.muon_lr, schedule=h.schedule,
            decay_frac=h.decay_frac,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _scales_gradients(self) -> bool:
        """fp16 mixed precision: the loss is scaled, so gradients are too until unscaled."""
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the true gradients. In fp32 and bf16 no scaler is involved, so the fused AdamW is
        kept and the gradients are clipped here (Lightning refuses to clip for any fused
        optimizer under mixed precision, scaler or not). With an fp16 scaler the optimizer is not
        fused, and Lightning unscales before its own clipping."""
        if not gradient_clip_val:
            return
        if self._scales_gradients():
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        elif gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the run's metadata (musicgen.checkpoint.run.RunMetadata, written by musicgen.training.fit), as given
        checkpoint["musicgen"] = self.metadata

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.metadata = checkpoint.get("musicgen", self.metadata)


class Seq2OneLM(LanguageModelModule):
    """The original's LSTM objective: cross-entropy on the single token after each window."""

    objective = "seq2one"

    def loss_sum(self, x, y):
        logits = self(x, last_only=True)  # (B, V)
        self._note_z_loss(logits)
        total = F.cross_entropy(logits.float(), y, reduction="sum")
        return total, torch.tensor(y.numel(), device=y.device)


class CausalLM(LanguageModelModule):
    """Cross-entropy at every position of the window; padded targets (-100) are ignored."""

    objective = "causal"

    def loss_sum(self, x, y):
        logits = self(x)  # (B, T, V)
        total = F.cross_entropy(
            logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        if self.training and self.hparams.z_loss:
            self._note_z_loss(logits[y != IGNORE_INDEX])  # (N, V): the scored positions
        return total, (y != IGNORE_INDEX).sum()
