"""The optimisers (AdamW, or Muon on the blocks' matrices with AdamW on the rest) and the
learning-rate schedules (warmup + cosine, warmup-stable-decay)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from musicgen.errors import ConfigError

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")


def param_groups(net: nn.Module, weight_decay: float, exclude: set[int] = frozenset()) -> list[dict]:
    """Decay matrices only: no weight decay on norms, biases and embeddings (tied or not).
    ``exclude``: ids of parameters another optimizer takes (Muon's matrices)."""
    no_decay = {id(m.weight) for m in net.modules() if isinstance(m, nn.Embedding)}
    decay, keep = [], []
    for p in net.parameters():
        if not p.requires_grad or id(p) in exclude:
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


def warmup_stable_decay(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float,
                        decay_frac: float) -> float:
    """Multiplier of the peak learning rate: linear warmup, the peak held, then a linear decay
    to ``min_lr_ratio`` over the last ``decay_frac`` of ``total_steps`` (WSD: Hu et al. 2024,
    MiniCPM; Hagele et al. 2024, "Scaling laws and compute-optimal training beyond fixed
    training durations"). The warmup is the same as ``warmup_cosine``'s."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, round(decay_frac * total_steps))
    decay_start = max(warmup_steps, total_steps - decay_steps)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, total_steps - decay_start))
    return 1.0 - (1.0 - min_lr_ratio) * progress


@dataclass
class WarmupStableDecay(WarmupCosine):
    """``warmup_stable_decay`` as a checkpointable object. A ``WarmupCosine`` by type only so that
    the time budget (``musicgen.training.callbacks.Budget``, which looks for that type) sets its
    ``total_steps`` too: the decay phase then ends with the budget, as the cosine does."""

    decay_frac: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.decay_frac <= 1.0:
            raise ConfigError(f"optim.decay_frac={self.decay_frac!r} must be in (0, 1]")

    def __call__(self, step: int) -> float:
        return warmup_stable_decay(step, self.warmup_steps, self.total_steps, self.min_lr_ratio, self.decay_frac)


def muon_params(net: nn.Module) -> list[nn.Parameter]:
    """The hidden matrices Muon takes: the 2-D weights inside the network's blocks
    (``net.layers``: attention qkv and output, the feed-forward's w13 and w2). Embeddings,
    norms, biases and the output head (tied or not) sit outside the blocks and stay with AdamW,
    as Muon's authors prescribe."""
    blocks = getattr(net, "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ConfigError(f"optim.name=muon needs a network with transformer blocks (net.layers); "
                          f"{type(net).__name__} has none: use optim.name=adamw")
    return [p for p in blocks.parameters() if p.requires_grad and p.ndim == 2]


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer made of two: ``torch.optim.Muon`` on the blocks' matrices and AdamW on the
    rest, so Lightning steps it like any other (automatic optimization, gradient clipping,
    precision plugins, gradient scaler) and a scheduler scales both.

    Its ``param_groups`` are the inner optimizers' group dicts (Muon's first) and its ``state``
    is the one dict both inner optimizers write to (each touches only its own parameters), so
    ``state_dict``/``load_state_dict`` are ``Optimizer``'s own; after a load the inner
    optimizers are pointed at the loaded groups and state again."""

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw
        super().__init__(muon.param_groups + adamw.param_groups, defaults={})
        self._share()

    def _share(self) -> None:
        n = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:n], self.param_groups[n:]
        self.muon.state = self.adamw.state = self.state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._share()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss


def build_optimizer(
    net: nn.Module,
    total_steps: int,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    warmup_steps: int,
    min_lr_ratio: float,
    fused: bool = True,
    name: str = "adamw",
    muon_lr: float | None = None,
    schedule: str = "cosine",
    decay_frac: float = 0.2,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (``fused``: one kernel for all parameters; else the multi-tensor ``foreach`` path)
    under the warmup + cosine schedule. A fused AdamW unscales fp16 gradients inside its step, so
    a caller training with a gradient scaler and clipping must pass ``fused=False``.

    ``name="muon"``: ``MuonAdamW``, Muon at ``muon_lr`` (default ``lr``) with Moonshot's
    ``match_rms_adamw`` scaling (its update's RMS matched to AdamW's, so AdamW's learning rate
    and weight decay carry over: Liu et al. 2025, "Muon is scalable for LLM training") on
    ``muon_params``, AdamW on the rest. ``schedule="wsd"``: ``WarmupStableDecay`` instead of
    the cosine, decaying over the last ``decay_frac`` of the steps."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.name={name!r} must be one of {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={schedule!r} must be one of {', '.join(SCHEDULES)}")
    matrices = muon_params(net) if name == "muon" else []
    adamw = torch.optim.AdamW(param_groups(net, weight_decay, exclude={id(p) for p in matrices}), lr=lr,
                              betas=tuple(betas), fused=fused, foreach=None if fused else True)
    opt = adamw
    if matrices:
        muon = torch.optim.Muon(matrices, lr=lr if muon_lr is None else muon_lr, weight_decay=weight_decay,
                                adjust_lr_fn="match_rms_adamw")
        opt = MuonAdamW(muon, adamw)
    if schedule == "wsd":
        fn = WarmupStableDecay(warmup_steps, total_steps, min_lr_ratio, decay_frac)
    else:
        fn = WarmupCosine(warmup_steps, total_steps, min_lr_ratio)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, fn)
