"""`make demo` end to end, as the README runs it, on a small corpus with a short time budget:
`train +version=v7 preset=cpu` (exporting the tunes it trains on), generate, evaluate. Every setting but the corpus size
and the time budget is the demo's own, so a broken `make demo` turns `make test` red."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import REPO, run_cli

from musicgen.training.optim import WarmupCosine

BUDGET_S = 60  # one torch thread beside another test worker: about 50 steps here, fewer on slower machines


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "MUSICGEN_DATA_DIR": str(tmp / "data"), "PYTHONUNBUFFERED": "1"}
    run_dir = tmp / "demo"
    cmd = ["make", "-o", ".venv/.installed", "demo", f"PY={sys.executable}", f"DEMO_DIR={run_dir}",
           f"ARGS=data.max_files=300 trainer.max_time=00:00:00:{BUDGET_S} optim.warmup_steps=10"]  # warmup scaled
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return run_dir


def test_demo_writes_samples_report_and_checkpoints(demo):
    metrics = json.loads((demo / "metrics.json").read_text())
    assert metrics["version"] == "v7" and metrics["global_step"] > 10
    assert metrics["val_ppl"] < metrics["unigram_val_ppl"]  # it learned something in its budget
    generated = json.loads((demo / "samples" / "generation.json").read_text())
    assert len(generated["samples"]) == 4
    assert any((demo / "samples" / s["midi"]).stat().st_size > 0 for s in generated["samples"] if "midi" in s)
    report = json.loads((demo / "evaluation.json").read_text())
    assert report["split"] == "test" and report["settings"]["num_samples"] == report["model"]["pieces"]  # < 100
    assert report["model"]["nll_per_note"]["value"] > 0 and report["ngram"]["nll_per_note"]["value"] > 0
    assert (demo / "evaluation.md").exists()
    manifest = json.loads((demo.parent / "data" / "folk" / "manifest.json").read_text())
    assert len(manifest["files"]) == 300 and manifest["sources_partial"] > 0  # only what it trained on
    assert {p.name for p in (demo / "checkpoints").iterdir()} >= {"best.ckpt", "last.ckpt"}


def test_time_budget_ends_with_the_learning_rate_at_its_floor(demo):
    cfg = yaml.safe_load((demo / "config.yaml").read_text())
    peak, floor = cfg["optim"]["lr"], cfg["optim"]["lr"] * cfg["optim"]["min_lr_ratio"]
    ckpt = torch.load(demo / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    budget = next(v for k, v in ckpt["callbacks"].items() if k.startswith("Budget"))
    assert budget["total_steps"] == ckpt["global_step"]  # ended by the step count estimated from the time
    schedule = WarmupCosine(**ckpt["lr_schedulers"][0]["lr_lambdas"][0])
    assert schedule.total_steps == budget["total_steps"]
    assert peak * schedule(ckpt["global_step"]) == pytest.approx(floor)  # the schedule ends at its floor
    last = peak * schedule(ckpt["global_step"] - 1)  # the last step's lr: one cosine step above the floor,
    assert floor <= last < floor + 0.05 * (peak - floor)  # which is ~0.8% of the range at 30 steps
    rows = list(csv.DictReader(next(demo.rglob("metrics.csv")).open()))
    logged = [float(r["lr-AdamW/pg1"]) for r in rows if r.get("lr-AdamW/pg1")]  # every 5 steps
    assert max(logged) == pytest.approx(peak, rel=0.05) and logged[-1] < 0.25 * peak


def test_run_directory_records_the_preset(demo):
    """.hydra/config.yaml, config.yaml and the checkpoint all hold the config that trained."""
    hydra_cfg = yaml.safe_load((demo / ".hydra" / "config.yaml").read_text())
    run_cfg = yaml.safe_load((demo / "config.yaml").read_text())
    ckpt = torch.load(demo / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    for cfg in (hydra_cfg, run_cfg, ckpt["musicgen"]["config"]):
        assert cfg["preset"]["name"] == "cpu"
        assert cfg["model"]["d_model"] == 256 and cfg["model"]["n_layers"] == 4  # cpu_transformer sizes
        assert cfg["data"]["seq_len"] == 128 and cfg["optim"]["lr"] == 2.0e-3  # over v7's 256 and 3e-4
        assert cfg["trainer"]["max_time"] == f"00:00:00:{BUDGET_S}"  # the command line over the preset
    assert ckpt["musicgen"]["model"]["d_model"] == 256


def test_cfg_job_shows_the_preset():
    proc = run_cli("musicgen.train", ["+version=v7", "preset=cpu", "--cfg", "job"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["d_model"] == 256 and cfg["trainer"]["max_time"] == "00:00:11:00"
    assert cfg["version"]["name"] == "v7" and cfg["model"]["d_ff"] == 768
