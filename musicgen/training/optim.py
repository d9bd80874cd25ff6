"""AdamW parameter groups and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: no weight decay on norms, biases and embeddings (tied or not)."""
    no_decay = {id(m.weight) for m in net.modules() if isinstance(m, nn.Embedding)}
    decay, keep = [], []
    for p in net.parameters():
        if not p.requires_grad:
            continue
        (keep if p.ndim < 2 or id(p) in no_decay else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate: linear warmup, then cosine decay to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class WarmupCosine:
    """``warmup_cosine`` as a callable object: ``LambdaLR`` saves an object's attributes in its
    ``state_dict`` (a lambda it drops), so a checkpoint records ``total_steps``, which a time
    budget may set during the run (``musicgen.training.callbacks.Budget``), and a resume restores it."""

    warmup_steps: int
    total_steps: int
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)


def build_optimizer(
    net: nn.Module,
    total_steps: int,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    warmup_steps: int,
    min_lr_ratio: float,
    fused: bool = True,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (``fused``: one kernel for all parameters; else the multi-tensor ``foreach`` path)
    under the warmup + cosine schedule. A fused AdamW unscales fp16 gradients inside its step, so
    a caller training with a gradient scaler and clipping must pass ``fused=False``."""
    opt = torch.optim.AdamW(param_groups(net, weight_decay), lr=lr, betas=tuple(betas),
                            fused=fused, foreach=None if fused else True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))
    return opt, sched
