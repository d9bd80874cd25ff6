"""A 2-process CPU DDP run (gloo) trains, syncs its validation loss across ranks, writes each
checkpoint once (rank 0), and resumes."""

import csv
import json

import lightning as L
import pytest
from helpers import cli_overrides, run_cli
from hydra.utils import instantiate

from musicgen.checkpoint import load_run
from musicgen.config import compose
from musicgen.training import CausalLM

DDP = ["+version=v7", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
       "trainer.limit_train_batches=2", "trainer.limit_val_batches=1.0",
       "callbacks.resume_checkpoint.every_n_train_steps=1",
       "trainer.plugins=[{_target_: faults.RecordingCheckpointIO}]"]


def test_ddp_trains_syncs_writes_once_and_resumes(smoke_overrides, tmp_path):
    run = tmp_path / "ddp_run"
    args = [*DDP, *cli_overrides(smoke_overrides), f"hydra.run.dir={run}"]
    first = run_cli("musicgen.train", [*args, "trainer.max_steps=2"])
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli("musicgen.train", [*args, "trainer.max_steps=4", "resume=true"])
    assert second.returncode == 0, second.stderr[-3000:]

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    with open(run / "csv" / "metrics.csv") as f:  # the resumed attempt logged steps 3 and 4 only
        steps = {int(r["step"]) for r in csv.DictReader(f) if r["train/loss"]}
    assert min(steps) >= 2

    writes = (run / "checkpoints" / "writes.log").read_text().split("\n")[:-1]
    assert writes and all(w.startswith("0 ") for w in writes)  # rank 0 only, never rank 1
    assert {"0 last.ckpt 1", "0 last.ckpt 3", "0 best.ckpt 4"} <= set(writes)

    # the logged validation loss is over the whole validation set (both ranks' halves)
    cfg = compose("train", ["+version=v7", *smoke_overrides, "trainer.limit_val_batches=1.0"])
    dm = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    module = CausalLM(net=load_run(run / "checkpoints" / "last.ckpt").net)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    single = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    assert metrics["val_loss"] == pytest.approx(single, abs=1e-5)
