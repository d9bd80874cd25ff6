"""Faults injected into training runs by the reliability tests (as extra Hydra callbacks)."""

import os
import signal
from pathlib import Path

import lightning as L

from musicgen.training.callbacks import AtomicCheckpointIO


class SignalAtStep(L.Callback):
    """Send ``sig`` (a name: SIGKILL, SIGTERM, SIGINT) to this process as optimizer step ``step``
    starts (steps count from 1: step 3 is the third), like a signal arriving mid-step."""

    def __init__(self, step: int, sig: str = "SIGKILL") -> None:
        self.step, self.sig, self.sent = step, sig, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step - 1 and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.sig))


def signal_at(step: int, sig: str) -> list[str]:
    return ["+callbacks.fault._target_=faults.SignalAtStep", f"+callbacks.fault.step={step}",
            f"+callbacks.fault.sig={sig}"]


class RecordingCheckpointIO(AtomicCheckpointIO):
    """Atomic checkpoint writes, each also listed in ``checkpoints/writes.log`` with the rank that
    wrote it."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        rank = os.environ.get("LOCAL_RANK", "0")
        with open(Path(path).parent / "writes.log", "a") as f:
            f.write(f"{rank} {Path(path).name} {checkpoint['global_step']}\n")
