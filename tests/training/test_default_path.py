"""Training on the path users run: the default precision, gradient clipping and the fused
optimiser together, for each model family, eager and compiled. The smoke preset shrinks sizes
and step counts only, so these runs differ from a user's only in size."""

import json

import pytest
import torch
from helpers import VERSIONS
from probes import probe

from musicgen.config import compose
from musicgen.runtime import default_precision
from musicgen.training.fit import train

FAMILIES = {"v1": "LSTM, float input, seq2one", "v6": "LSTM, embedding, seq2one", "v7": "Transformer, causal"}


def run(version, smoke_overrides, tmp_path, *extra):
    cfg = compose("train", [f"+version={version}", *smoke_overrides, *probe(tmp_path / "probe.json"), *extra])
    metrics = train(cfg)
    return cfg, metrics, json.loads((tmp_path / "probe.json").read_text())


def test_smoke_preset_keeps_the_versions_semantics(tmp_path):
    for version in VERSIONS:
        full = compose("train", [f"+version={version}"])
        smoke = compose("train", [f"+version={version}", "preset=smoke"])
        for key in ("precision", "gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches"):
            assert smoke.trainer.get(key) == full.trainer.get(key), (version, key)
        for key in ("dropout", "input_mode", "tie_embeddings"):
            assert smoke.model.get(key) == full.model.get(key), (version, key)
        assert smoke.objective == full.objective and smoke.optim.weight_decay == full.optim.weight_decay
    assert full.trainer.gradient_clip_val == 1.0


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
@pytest.mark.parametrize("version", sorted(FAMILIES))
def test_each_family_trains_with_clipping_and_the_fused_optimizer(version, precision, smoke_overrides, tmp_path):
    # a clip low enough to act at every step, so the test sees that clipping happened
    cfg, metrics, seen = run(version, smoke_overrides, tmp_path, f"trainer.precision={precision}",
                             "trainer.gradient_clip_val=0.05")
    assert metrics["global_step"] == 4 and torch.isfinite(torch.tensor(metrics["val_loss"]))
    assert seen["precision"] == precision
    assert seen["optimizer"] == "AdamW" and seen["fused"] is True
    assert set(seen["autocast"]) == {"torch.bfloat16" if precision == "bf16-mixed" else "None"}
    assert len(seen["at_step"]) == 4
    assert max(seen["before"]) > 0.05  # the clip had something to do ...
    assert max(seen["at_step"]) <= 0.05 * 1.001  # ... and the optimizer saw clipped gradients


def test_default_precision_trains_compiled(smoke_overrides, tmp_path):
    cfg, metrics, seen = run("v7", smoke_overrides, tmp_path, "objective.module.compile=true")
    assert seen["precision"] == default_precision() and cfg.trainer.gradient_clip_val == 1.0
    assert seen["fused"] is True and metrics["global_step"] == 4
    assert max(seen["at_step"]) <= 1.0 * 1.001


FP16_ON_CPU = [  # Lightning refuses precision=16-mixed on CPU; its plugin with a CPU GradScaler runs
    "trainer.precision=null",
    "trainer.plugins=[{_target_: musicgen.training.callbacks.AtomicCheckpointIO}, {_target_: "
    "lightning.pytorch.plugins.MixedPrecision, precision: 16-mixed, device: cpu, "
    "scaler: {_target_: torch.amp.GradScaler, device: cpu}}]",
]


def test_fp16_scaler_uses_the_unfused_optimizer_and_clips_unscaled_gradients(smoke_overrides, tmp_path):
    """fp16 mixed precision (GPUs without bf16): gradients carry the loss scale until unscaled,
    which a fused AdamW does inside its step, too late for clipping; the module then builds the
    foreach AdamW and Lightning unscales before clipping."""
    cfg, metrics, seen = run("v7", smoke_overrides, tmp_path, *FP16_ON_CPU, "trainer.gradient_clip_val=0.05")
    assert seen["precision"] == "16-mixed" and set(seen["autocast"]) == {"torch.float16"}
    assert seen["fused"] is False and metrics["global_step"] >= 1
    assert max(seen["at_step"]) <= 0.05 * 1.001  # unscaled, then clipped (scaled grads would be ~65536x)
