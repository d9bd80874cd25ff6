"""Helpers shared by the tests: the repository's paths, the versions, smoke-run overrides, one runner
for ``python -m musicgen.*`` and a generate config. Fixtures live in ``conftest.py``.

A plain module (``import helpers``), as the tests have no packages: pytest puts ``tests/``, the
folder of the root ``conftest.py``, on ``sys.path``; for the same reason the folders of the test
modules (e.g. ``tests/reliability`` with ``faults``, ``tests/training`` with ``probes``) are there
too, so callbacks named as Hydra ``_target_`` by dotted name (``faults.SignalAtStep``,
``probes.OptimizerProbe``) resolve in-process. ``run_cli`` puts those folders on the
subprocess's ``PYTHONPATH`` for the same names to resolve there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from musicgen.config import CONF_DIR, compose

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

#: Every version under conf/version/ (v1 ... v8 today): tests parametrised with it cover a new one.
VERSIONS = sorted(p.stem for p in (CONF_DIR / "version").glob("*.yaml"))

#: Folders of the test modules that subprocess runs name as Hydra targets (``faults``, ``probes``).
TARGET_DIRS = (TESTS / "reliability", TESTS / "training")


def smoke_override_list(tmp, data_dir, output_dir=None) -> list[str]:
    """Overrides for a seconds-long training run on the prepared test tunes, writing under ``tmp``
    (the run directory: ``output_dir``, by default ``tmp/run``)."""
    return [
        "preset=smoke",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={tmp}/cache",
        f"paths.output_dir={output_dir or f'{tmp}/run'}",
        f"paths.log_dir={tmp}/outputs",
        "data.max_files=null",
        "data.val_frac=0.25",
        "callbacks.progress_bar=null",
    ]


def dpo_overrides(smoke_run, smoke_overrides, *extra) -> list[str]:
    """A smoke DPO fine-tuning of ``smoke_run`` (critic pairs unless ``extra`` names other preferences)."""
    return ["+version=v7", *smoke_overrides, "objective=dpo", f"objective.module.init_from={smoke_run}",
            "objective.module.pairs=12", "objective.module.critic_samples=8", "objective.module.beta=0.5",
            "objective.module.max_new_tokens=48", "callbacks.sample_metrics=null", "optim.lr=3e-3",
            "trainer.max_steps=6", "trainer.limit_train_batches=null", *extra]


def cli_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` for the command line: without ``paths.output_dir``, as the run directory comes
    from ``hydra.run.dir`` there (by default under ``paths.log_dir``)."""
    return [o for o in overrides if not o.startswith("paths.output_dir")]


def run_cli(module: str, args: Sequence[str], *, timeout: int = 300,
            check: bool = False) -> subprocess.CompletedProcess:
    """``python -m <module> *args`` in the repository root, output captured as text.

    Unbuffered, without ``HYDRA_FULL_ERROR`` (the entry points' one-line errors are tested), and
    with ``TARGET_DIRS`` on ``PYTHONPATH``. ``check``: assert that it exited 0, showing the ends
    of its output otherwise.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, TARGET_DIRS), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def gen_cfg(run_dir, out_dir, overrides: Sequence[str] = (), **kw) -> DictConfig:
    """The generate config for the run (or checkpoint) ``run_dir`` writing to ``out_dir``, with
    ``overrides`` composed in and ``kw`` (dotted keys: ``**{"prompt.source": "none"}``) set after."""
    cfg = compose("generate", [f"ckpt_path={run_dir}", f"output_dir={out_dir}", *overrides])
    for k, v in kw.items():
        OmegaConf.update(cfg, k, v)
    return cfg
