"""The notes budget (``NotesBudget``): a run held to an amount of training music rather than a
number of steps or a wall time, so that runs of different shapes see the same music (the
leaderboard's budget, ``musicgen.experiments.leaderboard``)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


def tail_improvement(curve: Sequence[tuple[float, float]], tail: float = 0.2) -> float:
    """The convergence rule's figure: over the last ``tail`` of a run so far (in notes seen), how
    much its best validation NLL per note improved, relative to the best before the tail began.
    ``curve`` holds (notes seen, NLL per note) per validation in order; NaN without a validation at
    or before the tail's start."""
    if not curve:
        return math.nan
    end = curve[-1][0]
    # a validation at exactly the tail's start counts, also as logged (float32: notes seen are
    # rounded, and four fifths of the end can land a hair below the validation it names)
    before = [v for n, v in curve if n <= (1 - tail) * end * (1 + 1e-6)]
    if not before:
        return math.nan
    best_then, best_end = min(before), min(v for _, v in curve)
    return (best_then - best_end) / best_then


class NotesBudget(L.Callback):
    """Ends a run after ``max_notes`` notes of training music seen, and logs how much music, compute
    and training time it has had, so runs of different shapes can be held to the same budget.

    Notes seen are the loss targets counted in notes of source music: a causal window scores all
    its ``seq_len`` targets, a seq2one window one; each target is worth the training split's notes
    per token (its source notes over its tokens, separators included). With packed windows every
    optimizer step sees the same number of targets, so the budget becomes ``max_steps`` before the
    optimizer is built (the schedule then reaches its floor at the budget's end) and every run of
    an entry, and every entry, sees the same music to within one step. ``validations`` spreads that
    many validations evenly over the budget (``trainer.check_val_every_n_epoch`` must be null) and
    ``warmup_share`` sets the warmup to that share of the steps.

    ``stop_tolerance`` turns on early stopping at convergence: from ``stop_after`` (a share of the
    budget) on, the run stops at the first validation where its best validation NLL per note
    improved by less than ``stop_tolerance`` (relative) over the last fifth of the notes seen so
    far (``tail_improvement``), the rule the leaderboard reads convergence by.

    Logged at each validation: ``budget/notes_seen``, ``budget/flops`` (the forward and backward
    FLOPs of the windows' tokens: the model's ``flops_per_token``, else 6 x parameters),
    ``budget/train_seconds`` (wall time of the fit with validation left out, across resumes) and
    ``budget/val_tokens_per_note`` (``val/loss`` times it is the validation NLL per note).
    """

    def __init__(self, max_notes: float, validations: int | None = None, warmup_share: float | None = None,
                 stop_tolerance: float | None = None, stop_after: float = 0.5) -> None:
        if not max_notes > 0:
            raise ValueError(f"max_notes={max_notes} must be > 0")
        if validations is not None and validations < 1:
            raise ValueError(f"validations={validations} must be >= 1")
        if warmup_share is not None and not 0 <= warmup_share < 1:
            raise ValueError(f"warmup_share={warmup_share} must be in [0, 1)")
        if stop_tolerance is not None and not (stop_tolerance > 0 and 0 <= stop_after <= 1):
            raise ValueError(f"stop_tolerance={stop_tolerance} must be > 0 and stop_after={stop_after} in [0, 1]")
        self.max_notes, self.validations, self.warmup_share = float(max_notes), validations, warmup_share
        self.stop_tolerance, self.stop_after = stop_tolerance, float(stop_after)
        self.curve: list[tuple[float, float]] = []  # (notes seen, validation NLL per note) per validation
        self.notes_per_step = self.flops_per_step = self.val_tokens_per_note = 0.0
        self._t0 = self._val_t0 = 0.0
        self._val_seconds = self._before = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or dm is None or dm.cache is None:
            return
        splits = dm.cache.splits
        train, val = splits["train"], splits["val"]
        notes_per_token = float(train.notes.sum()) / max(1, len(train.tokens))
        self.val_tokens_per_note = len(val.tokens) / max(1, float(val.notes.sum()))
        windows = dm.batch_size * trainer.accumulate_grad_batches * trainer.world_size
        targets = windows * (1 if dm.mode == "seq2one" else dm.seq_len)
        self.notes_per_step = targets * notes_per_token
        net = pl_module.net
        per_token = (net.flops_per_token(dm.seq_len) if hasattr(net, "flops_per_token")
                     else 6.0 * sum(p.numel() for p in net.parameters()))
        self.flops_per_step = windows * dm.seq_len * per_token
        steps = max(1, math.ceil(self.max_notes / self.notes_per_step))
        if 0 < trainer.max_steps < steps:
            log.warning("trainer.max_steps=%d ends the run before its %.3g notes (%d steps)",
                        trainer.max_steps, self.max_notes, steps)
            steps = trainer.max_steps
        trainer.fit_loop.epoch_loop.max_steps = steps
        if self.validations:  # evenly over the budget, counted in training batches across epochs
            trainer.val_check_interval = max(1, steps * trainer.accumulate_grad_batches // self.validations)
        if self.warmup_share is not None:  # read by configure_optimizers, which runs after this hook
            pl_module.hparams.warmup_steps = round(self.warmup_share * steps)
        log.info("notes budget: %.3g notes, %.1f notes per optimizer step: %d steps", self.max_notes,
                 self.notes_per_step, steps)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:

        self._t0, self._val_seconds = time.monotonic(), 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:

        self._val_t0 = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_seconds += time.monotonic() - self._val_t0
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or not self.notes_per_step or loss is None:
            return
        notes = trainer.global_step * self.notes_per_step
        self.curve.append((notes, float(loss) * self.val_tokens_per_note))
        if self.stop_tolerance is None or notes < self.stop_after * self.max_notes:
            return
        gain = tail_improvement(self.curve)
        if gain < self.stop_tolerance:  # NaN (no validation before the last fifth) never stops
            log.info("converged at %.3g notes: validation NLL per note improved %.2f%% over the last fifth; "
                     "stopping early", notes, 100 * gain)
            trainer.should_stop = True

    def train_seconds(self) -> float:

        return self._before + time.monotonic() - self._t0 - self._val_seconds

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # callbacks run before the module's hook, so val/loss is not logged yet: the curve is
        # val/loss x budget/val_tokens_per_note of the same row
        if trainer.sanity_checking or not self.notes_per_step:
            return
        step = trainer.global_step
        pl_module.log("budget/notes_seen", step * self.notes_per_step)
        pl_module.log("budget/flops", step * self.flops_per_step)
        pl_module.log("budget/train_seconds", self.train_seconds())
        pl_module.log("budget/val_tokens_per_note", self.val_tokens_per_note)

    def state_dict(self) -> dict[str, Any]:  # a resumed run's training time and curve continue
        return {"train_seconds": self.train_seconds() if self._t0 else self._before, "curve": self.curve}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._before = float(state_dict.get("train_seconds", 0.0))
        self.curve = [tuple(p) for p in state_dict.get("curve", [])]
