"""Multirun with the basic sweeper and Optuna, SLURM launcher composition, and 2-process CPU DDP."""

import json

import pytest
import yaml
from helpers import cli_overrides, run_cli
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from musicgen.config import CONF_DIR, version_as_choice

DDP_CPU = ["+version=v7", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def test_multirun_basic_sweeper(smoke_overrides, tmp_path):
    run_cli("musicgen.train", ["-m", "+version=v7", "model.dropout=0.1,0.2", *cli_overrides(smoke_overrides)],
            timeout=600, check=True)
    sweeps = list((tmp_path / "outputs" / "train" / "v7").glob("multirun_*"))
    assert len(sweeps) == 1
    metrics = [json.loads((sweeps[0] / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    dropouts = [yaml.safe_load((sweeps[0] / str(i) / "config.yaml").read_text())["model"]["dropout"] for i in (0, 1)]
    assert sorted(dropouts) == [0.1, 0.2]
    assert all(m["global_step"] == 4 for m in metrics)


def test_optuna_sweep_minimises_val_loss(smoke_overrides, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    run_cli("musicgen.train", ["-m", "+version=v7", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                               "hydra.sweeper.sampler.n_startup_trials=2", *cli_overrides(smoke_overrides)],
            timeout=600, check=True)
    sweep = next((tmp_path / "outputs" / "train" / "v7").glob("multirun_*"))
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    losses = [json.loads((sweep / str(i) / "metrics.json").read_text())["val_loss"] for i in (0, 1)]
    assert result["best_value"] == pytest.approx(min(losses))


def test_slurm_launcher_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for launcher in ("submitit_slurm", "slurm"):
            cfg = hydra_compose("train", overrides=version_as_choice(["+version=v8", f"hydra/launcher={launcher}"]),
                                return_hydra_config=True)
            assert "SlurmLauncher" in cfg.hydra.launcher._target_
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 2880


def test_ddp_run_crosses_sampling_epochs(smoke_overrides, tmp_path):
    """Two CPU processes (gloo) share one run directory and finish. The sample-metrics callback
    generates on rank 0 alone; its metrics must not enter a collective the other rank never joins
    (gloo: "collective mismatch"; NCCL: a hang)."""
    run_cli("musicgen.train", [*DDP_CPU, *cli_overrides(smoke_overrides), "trainer.max_steps=-1",
                               "trainer.max_epochs=2", "trainer.limit_train_batches=2",
                               "callbacks.sample_metrics.every_n_epochs=1", "callbacks.sample_metrics.num_samples=2",
                               "callbacks.sample_metrics.max_new_tokens=16"],
            timeout=600, check=True)
    runs = list((tmp_path / "outputs" / "train" / "v7").iterdir())
    assert len(runs) == 1, runs  # both ranks share one run directory
    run = runs[0]
    assert json.loads((run / "metrics.json").read_text())["epoch"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    sampled = sorted(p.name for p in (run / "samples").iterdir())
    assert sampled == ["epoch_000", "epoch_001"]  # both sampling epochs, then the run finished
    assert len(json.loads((run / "samples" / "epoch_001" / "samples.json").read_text())["ids"]) == 2
