"""Callbacks the default-path tests add to training runs (as extra Hydra callbacks)."""

import json
from pathlib import Path

import lightning as L
import torch


def grad_norm(params) -> float:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


class OptimizerProbe(L.Callback):
    """Writes ``path`` (JSON) at the end of training: the optimizer's class and settings, the
    autocast dtype the network's training forward runs under, and each step's gradient norm before clipping (Lightning's
    ``on_before_optimizer_step``) and as the optimizer used it (read in a step post-hook)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.before: list[float] = []
        self.at_step: list[float] = []
        self.autocast: list[str] = []

    def on_train_start(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        params = [p for g in opt.param_groups for p in g["params"]]
        # after the step: the gradients it used are still there (Lightning runs the closure, and
        # so the clipping, inside optimizer.step, and zeroes them only before the next one)
        opt.register_step_post_hook(lambda *_: self.at_step.append(grad_norm(params)))

        pl_module.net.register_forward_pre_hook(self._record_autocast)

    def _record_autocast(self, module, args) -> None:
        if module.training:
            dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
            self.autocast.append(str(dtype))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before.append(grad_norm(pl_module.parameters()))

    def on_train_end(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        self.path.write_text(json.dumps({
            "optimizer": type(opt).__name__,
            "fused": bool(opt.defaults.get("fused")),
            "precision": trainer.precision,
            "autocast": self.autocast,
            "before": self.before,
            "at_step": self.at_step,
        }))


def probe(path) -> list[str]:
    return ["+callbacks.probe._target_=probes.OptimizerProbe", f"+callbacks.probe.path={path}"]
