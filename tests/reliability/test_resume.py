"""A run killed (SIGKILL), stopped (SIGTERM) or interrupted (Ctrl-C) at any step continues from
its last checkpoint to the same final validation loss as a run never stopped."""

import json
import signal

import pytest
import torch
from faults import signal_at
from helpers import cli_overrides, run_cli, smoke_override_list

from musicgen.config import compose
from musicgen.training.fit import train
from musicgen.training.resume import TrainingInterrupted

# 12 optimizer steps in 3 epochs of 4 batches, each ending with validation; last.ckpt every 2
# steps and at each validation. Dropout on, so the restored RNG state matters; every epoch takes
# 4 of the ~15 training batches, so the data order of each epoch matters.
RUN = [
    "+version=v7", "model.dropout=0.1", "trainer.max_steps=12", "trainer.limit_train_batches=4",
    "callbacks.resume_checkpoint.every_n_train_steps=2",
]


def ckpt_step(run_dir) -> int:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory, prepared_data_dir):
    """A token cache every test of this module reuses, and the uninterrupted run's metrics."""
    tmp = tmp_path_factory.mktemp("resume")
    cache = [f"paths.cache_dir={tmp}/cache"]
    overrides = [*RUN, *smoke_override_list(tmp, prepared_data_dir, output_dir=tmp / "reference")]  # cache: tmp/cache
    return cache, train(compose("train", overrides))


def test_sigkill_then_ctrl_c_resume_to_the_uninterrupted_result(smoke_overrides, shared, tmp_path):
    cache, reference = shared
    run = tmp_path / "cli_run"
    args = [*RUN, *cli_overrides(smoke_overrides), *cache, f"hydra.run.dir={run}"]

    killed = run_cli("musicgen.train", [*args, *signal_at(7, "SIGKILL")])
    assert killed.returncode == -signal.SIGKILL
    assert ckpt_step(run) == 6  # mid-epoch: 2 of epoch 1's batches done
    assert not list((run / "checkpoints").glob(".*.tmp"))

    stopped = run_cli("musicgen.train", [*args, "resume=true", *signal_at(9, "SIGINT")])
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    assert ckpt_step(run) == 9
    log = stopped.stdout + stopped.stderr
    assert "stopped by SIGINT" in log and f"resume=true hydra.run.dir={run}" in log

    metrics = train(compose("train", [*RUN, *smoke_overrides, *cache, f"paths.output_dir={run}", "resume=true"]))
    assert metrics == json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 12
    assert metrics["val_loss"] == pytest.approx(reference["val_loss"], abs=1e-5)
    assert metrics["train_loss"] == pytest.approx(reference["train_loss"], abs=1e-5)
    # the logs of the interrupted attempts are kept beside the new one
    logs = sorted(p.name for p in (run / "csv").glob("metrics*.csv"))
    assert logs == ["metrics.csv", "metrics.part1.csv", "metrics.part2.csv"]


# step 3: mid-epoch, continued in place (resume=true); step 4: an epoch's last batch (the
# checkpoint waits for its validation), continued into a new run directory (ckpt_path=<run dir>)
@pytest.mark.parametrize("step", [3, 4])
def test_sigterm_writes_a_checkpoint_and_resume_matches(step, smoke_overrides, shared, tmp_path):
    cache, reference = shared
    overrides = [*RUN, *smoke_overrides, *cache]
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}  # SIGINT: ignored under nohup
    with pytest.raises(TrainingInterrupted) as e:
        train(compose("train", [*overrides, *signal_at(step, "SIGTERM")]))
    assert e.value.signum == signal.SIGTERM
    run = tmp_path / "run"
    assert ckpt_step(run) == step
    assert {sig: signal.getsignal(sig) for sig in before} == before  # the handlers restored as they were

    again = ["resume=true"] if step == 3 else [f"ckpt_path={run}", f"paths.output_dir={tmp_path}/next"]
    metrics = train(compose("train", [*overrides, *again]))
    assert metrics["global_step"] == 12
    assert metrics["val_loss"] == pytest.approx(reference["val_loss"], abs=1e-5)
    assert metrics["train_loss"] == pytest.approx(reference["train_loss"], abs=1e-5)
