"""Full folk corpus figures quoted in the README: the LSTM DataModule's peak memory (REMI,
stride 1) and how much shorter BPE-512/1024 make the tunes than REMI.

    .venv/bin/python scripts/measure_folk.py [cache_dir]     (needs `make data` first)
"""

import json
import resource
import sys
import time

import numpy as np

from musicgen.data import MidiDataModule
from musicgen.tokenizers import RemiTokenizer


def lengths(dm, split: str, originals_only: bool) -> np.ndarray:
    st = dm.cache.splits[split]
    n = np.diff(st.offsets) - 2  # without BOS/EOS
    keep = np.array(["@" not in name for name in st.names]) if originals_only else np.ones(len(n), bool)
    return n[keep]


def main(cache_dir: str) -> None:
    common = dict(corpora=["folk"], data_dir="data", cache_dir=cache_dir, max_files=None, encode_workers=2,
                  progress=False)
    t = time.time()
    remi = MidiDataModule(RemiTokenizer(), mode="seq2one", seq_len=100, stride=1, **common)
    remi.setup()
    next(iter(remi.train_dataloader()))
    out = {"lstm_remi_stride1": {
        "seconds": round(time.time() - t, 1),
        "train_windows": len(remi.datasets["train"]),
        "cache_mb": round(sum(f.stat().st_size for f in remi.cache.path.iterdir()) / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "remi_median_tokens": float(np.median(lengths(remi, "train", True))),
    }}
    for n in (512, 1024):
        bpe = MidiDataModule(RemiTokenizer(bpe_vocab_size=n), mode="causal", seq_len=256, stride=64, **common)
        bpe.setup()
        row = {}
        splits = (("train_originals", "train", True), ("train_with_copies", "train", False), ("val", "val", True))
        for name, split, orig in splits:
            a, b = lengths(remi, split, orig), lengths(bpe, split, orig)
            row[name] = {"total_ratio": round(a.sum() / b.sum(), 3),
                         "mean_per_tune_ratio": round(float(np.mean(a / b)), 3)}
        out[f"bpe{n}"] = row
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/musicgen-folk-cache")
