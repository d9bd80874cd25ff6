"""Row 4: data. Tokenisation files/s (cold, cached), windows/s the DataModule serves (compared
with what the V6 LSTM consumes, in the report), the DataModule's peak traced memory vs the size
of its token cache."""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from musicgen.data.datamodule import MidiDataModule
from musicgen.experiments.speed.harness import Clock


def bench_data(cfg: DictConfig, clock: Clock) -> dict[str, Any]:
    data_cfg = cfg.data
    data_dir = Path(cfg.paths.data_dir)
    if data_cfg.root is None and not (data_dir / data_cfg.corpus / "manifest.json").exists():
        return {"skipped": f"{data_dir / data_cfg.corpus} is not prepared (make data)"}
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    out: dict[str, Any] = {"tokenizer": type(tokenizer).__name__}
    with tempfile.TemporaryDirectory(prefix="musicgen-bench-") as tmp:
        common = dict(
            root=data_cfg.root, corpora=[data_cfg.corpus], data_dir=str(data_dir), cache_dir=tmp,
            max_files=data_cfg.files, seed=cfg.seed, augment=dict(data_cfg.augment),
            encode_workers=data_cfg.encode_workers, progress=False,
        )

        def datamodule(kind: str):
            return MidiDataModule(tokenizer, **common, **dict(data_cfg[kind]))

        first = datamodule("lstm")
        cold = clock(first.setup)
        meta = first.cache.meta
        splits = meta["splits"].values()
        n_files = sum(split["files"] for split in splits) + len(meta["skipped"])
        cached = clock(datamodule("lstm").setup)
        cache_bytes = sum(path.stat().st_size for path in Path(first.cache.path).iterdir() if path.is_file())
        out["tokenize"] = {
            "files": n_files,
            "docs": sum(split["docs"] for split in splits),
            "tokens": sum(split["tokens"] for split in splits),
            "cold_s": cold, "cached_s": cached,
            "cold_files_per_s": n_files / cold, "cached_files_per_s": n_files / cached,
            "encode_workers": data_cfg.encode_workers, "augment": dict(data_cfg.augment),
        }

        def serve(kind: str) -> dict[str, Any]:
            served = datamodule(kind)
            served.setup()
            n_batches = n_windows = 0
            start = time.perf_counter()
            for x, _ in served.train_dataloader():
                n_batches += 1
                n_windows += x.size(0)
                if n_batches >= data_cfg.max_batches or time.perf_counter() - start > data_cfg.max_seconds:
                    break
            seconds = time.perf_counter() - start
            return {"windows_per_s": n_windows / seconds, "tokens_per_s": n_windows * served.seq_len / seconds,
                    "windows": n_windows, "dataset_windows": len(served.datasets["train"]), **dict(data_cfg[kind])}

        out["serve"] = {kind: serve(kind) for kind in ("lstm", "transformer")}
        # peak traced (Python + numpy) memory of a DataModule loading the cache and serving batches;
        # the memory-mapped token arrays are file pages, not heap
        tracemalloc.start()
        try:
            serve("lstm")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        out["memory"] = {"peak_traced_mb": peak / 2**20, "cache_mb": cache_bytes / 2**20,
                         "peak_vs_cache_ratio": peak / max(cache_bytes, 1)}
    return out
