"""``make gpu-check`` (scripts/gpu_check.py) without a CUDA device: one line, exit 1, nothing run."""

import subprocess
import sys

import pytest
import torch
from helpers import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: make gpu-check would run")
def test_without_cuda_it_says_so_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--out", str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "needs a CUDA device" in proc.stderr
    assert not (tmp_path / "out").exists()
