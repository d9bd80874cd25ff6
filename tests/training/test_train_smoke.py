"""Every version trains end to end at smoke size, to a checkpoint and metrics.json."""

import json

import pytest
import torch
from helpers import VERSIONS, cli_overrides, run_cli

from musicgen.config import compose
from musicgen.training.fit import train


@pytest.mark.parametrize("version", VERSIONS)
def test_version_smoke_run(version, smoke_overrides, tmp_path):
    cfg = compose("train", [f"+version={version}", *smoke_overrides])
    metrics = train(cfg)
    run = tmp_path / "run"
    for f in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "tokenizer.json", "metrics.json", "config.yaml"):
        assert (run / f).exists(), f
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["version"] == version
    for key in ("train_loss", "val_loss", "val_ppl", "epoch", "global_step", "unigram_val_ppl"):
        assert saved[key] is not None, key
    assert saved["global_step"] == 4
    assert torch.isfinite(torch.tensor(saved["val_loss"]))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    meta = ckpt["musicgen"]
    assert meta["version"] == version
    assert meta["model"]["vocab_size"] == metrics["vocab_size"]
    assert json.loads(meta["tokenizer"])  # the tokeniser travels inside the checkpoint


def test_cli_runs_a_version(smoke_overrides, tmp_path):
    proc = run_cli("musicgen.train", ["+version=v6", *cli_overrides(smoke_overrides)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "train" / "v6").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "metrics.json").exists() and (runs[0] / "checkpoints" / "best.ckpt").exists()


def test_vocab_size_must_agree_with_tokenizer(smoke_overrides):
    cfg = compose("train", ["+version=v6", "model.vocab_size=300", *smoke_overrides])
    with pytest.raises(ValueError, match="model.vocab_size=300 disagrees"):
        train(cfg)


def test_compiled_training_forward(smoke_overrides, tmp_path):
    cfg = compose("train", ["+version=v7", "objective.module.compile=true", *smoke_overrides])
    metrics = train(cfg)
    assert metrics["global_step"] == 4 and torch.isfinite(torch.tensor(metrics["val_loss"]))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    assert not any("_orig_mod" in k for k in state)  # the same keys as eager: loadable by generate
    assert "net.tok_emb.weight" in state
