"""W&B offline logging read back, and the sample-metrics callback."""

import csv
import json
import time

import pytest
from wandb_log import finished, history

from musicgen.audio import find_soundfont
from musicgen.config import compose
from musicgen.tokenizers import load_tokenizer
from musicgen.training.fit import train

SAMPLES_EVERY_EPOCH = [
    "callbacks.sample_metrics.every_n_epochs=1",
    "callbacks.sample_metrics.num_samples=2",
    "callbacks.sample_metrics.max_new_tokens=24",
]


def test_wandb_offline_run_is_read_back(smoke_overrides, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose("train", ["+version=v7", "logger=wandb", *SAMPLES_EVERY_EPOCH, *smoke_overrides])
    assert cfg.logger.wandb.offline is True
    train(cfg)
    wandb.finish()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_file = next(runs[0].glob("run-*.wandb"))
    for _ in range(60):  # the service process flushes after finish() returns
        if finished(run_file):
            break
        time.sleep(0.5)
    rows = history(run_file)
    logged = {k: v for row in rows for k, v in row.items()}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert logged["val/loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)
    assert "train/loss" in logged and "trainer/global_step" in logged
    assert logged["train/tokens_per_second"] > 0 and 0 < logged["train/mfu"] < 1
    assert 0.0 <= logged["samples/ended_at_eos"] <= 1.0 and logged["samples/tokens_per_piece"] <= 24
    assert logged["samples/pitch_histogram/_type"] == "images/separated"
    assert logged["samples/table/_type"] == "table-file" and logged["samples/table/nrows"] == 2
    decoded = len(list((tmp_path / "run" / "samples").glob("epoch_000/sample_*.mid")))
    assert logged["samples/piano_roll/_type"] == "images/separated" and logged["samples/piano_roll/count"] == decoded
    # the CSV logger always runs beside it
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    assert any(r.get("val/loss") for r in rows)
    assert any(r.get("train/tokens_per_second") for r in rows) and any(r.get("train/mfu") for r in rows)
    if find_soundfont() is None:
        pytest.skip("no General MIDI SoundFont installed (apt-get install fluid-soundfont-gm): audio not checked")
    assert logged["samples/audio/_type"] == "audio" and logged["samples/audio/count"] == decoded
    media = runs[0] / "files" / "media" / "audio"
    assert len(list(media.rglob("*.flac"))) >= decoded > 0


def test_sample_metrics_callback_writes_samples(smoke_overrides, tmp_path):
    cfg = compose("train", ["+version=v6", *SAMPLES_EVERY_EPOCH, *smoke_overrides])
    train(cfg)
    epochs = sorted((tmp_path / "run" / "samples").glob("epoch_*"))
    assert epochs
    rec = json.loads((epochs[0] / "samples.json").read_text())
    assert len(rec["ids"]) == 2 and all(len(s) <= 24 and 2 not in s for s in rec["ids"])  # one piece each
    assert rec["metrics"]["samples/tokens_per_piece"] == sum(map(len, rec["ids"])) / 2
    assert 0.0 <= rec["metrics"]["samples/ended_at_eos"] <= 1.0
    assert (epochs[0] / "pitch_histogram.png").stat().st_size > 0
    csv = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "samples/notes_per_piece" in csv


def test_sample_metrics_sample_a_conditioned_infilling_run_as_generate_does(smoke_overrides, tmp_path):
    """The callback decodes the live network through the API: a conditioned, infilling run samples
    with its null prefix, never an attribute or sentinel id (its DataModule's tokeniser counts them)."""
    cfg = compose("train", ["+version=v7", "conditioning=key", "infill=bars", *SAMPLES_EVERY_EPOCH,
                            *smoke_overrides])
    train(cfg)
    epochs = sorted((tmp_path / "run" / "samples").glob("epoch_*"))
    assert epochs
    rec = json.loads((epochs[0] / "samples.json").read_text())
    n_base = load_tokenizer(tmp_path / "run" / "tokenizer.json").vocab_size  # attribute ids start here
    ids = [t for s in rec["ids"] for t in s]
    assert len(rec["ids"]) == 2 and ids and max(ids) < n_base


def test_samples_once_per_sampling_epoch_when_validating_more_often(smoke_overrides, tmp_path):
    cfg = compose("train", ["+version=v6", *SAMPLES_EVERY_EPOCH, *smoke_overrides,
                            "trainer.val_check_interval=2", "trainer.max_steps=8"])  # 2 validations an epoch
    metrics = train(cfg)
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    validations = [r for r in rows if r.get("val/loss")]
    sampled = [r for r in rows if r.get("samples/tokens_per_piece")]
    assert len(validations) >= 2 * (metrics["epoch"])  # validated twice in each epoch ...
    assert len(sampled) == len({r["epoch"] for r in validations})  # ... and sampled once in each
