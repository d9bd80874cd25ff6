"""Helpers of the reliability tests (a module of its own: ``conftest`` names clash across folders)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def cli(overrides: list[str]) -> list[str]:
    """Overrides for the command line: the run directory comes from hydra.run.dir there."""
    return [o for o in overrides if not o.startswith("paths.output_dir")]


def run_train_cli(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m musicgen.train *args`` with this folder importable (for ``faults``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "musicgen.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
