"""A NaN or inf loss stops training with a message naming the step and batch; the last good
checkpoint stays as it was."""

import math

import pytest
import torch

from musicgen.config import compose
from musicgen.training.fit import train
from musicgen.training.modules import CausalLM


def test_injected_nan_stops_training_and_keeps_the_last_good_checkpoint(smoke_overrides, tmp_path, monkeypatch):
    real = CausalLM.loss_sum

    def loss_sum(self, x, y):
        total, n = real(self, x, y)
        return (total * math.nan if self.global_step == 2 else total), n

    monkeypatch.setattr(CausalLM, "loss_sum", loss_sum)
    cfg = compose("train", ["+version=v7", *smoke_overrides, "callbacks.resume_checkpoint.every_n_train_steps=1",
                            "trainer.accumulate_grad_batches=1"])  # one batch per step: step 2 is batch 2
    with pytest.raises(FloatingPointError, match=r"training loss is nan at global step 2 \(epoch 0, batch 2\)"):
        train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2  # written after step 2, nothing after the failure
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_a_huge_learning_rate_fails_with_a_clear_message(smoke_overrides):
    cfg = compose("train", ["+version=v6", *smoke_overrides, "optim.lr=1e30", "trainer.max_steps=8",
                            "trainer.gradient_clip_val=null"])
    message = r"training loss is (nan|inf) at global step \d+ \(epoch \d+, batch \d+\).*lower optim.lr"
    with pytest.raises(FloatingPointError, match=message):
        train(cfg)
