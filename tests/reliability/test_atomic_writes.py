"""A kill during prepare, a cache build or a checkpoint write leaves nothing half-written that a
later run trusts; running again finishes the job."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import REPO

from musicgen.data import cache as token_cache
from musicgen.data.augment import AugmentConfig
from musicgen.data.corpus import export_corpus
from musicgen.data.sources import list_midi_files, load_manifest
from musicgen.midi_io import read_score
from musicgen.tokenizers import RemiTokenizer
from musicgen.training.callbacks import AtomicCheckpointIO

#: Makes the n-th completed atomic write of this process die by SIGKILL after its data is in the
#: temporary file and before the rename: the worst moment.
KILL_IN_ATOMIC_WRITE = """
import os, signal
from contextlib import contextmanager
from musicgen import fs
real, calls = fs.atomic_path, [0]
@contextmanager
def dying_atomic_path(path):
    with real(path) as tmp:
        yield tmp
        calls[0] += 1
        if calls[0] == {n}:
            os.kill(os.getpid(), signal.SIGKILL)
fs.atomic_path = dying_atomic_path
"""


def run_killed(script: str) -> None:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]


def test_prepare_killed_mid_write_then_run_again(tmp_path):
    out = tmp_path / "chorales"
    # writes: chorale 1, its record, chorale 2 (killed before its rename)
    run_killed(KILL_IN_ATOMIC_WRITE.format(n=3) + f"""
from musicgen.data.corpus import export_corpus
export_corpus("chorales", {str(out)!r}, workers=1, limit=3, progress=False)
""")
    first = sorted(p.name for p in out.glob("*.mid"))
    assert len(first) == 1 and list(out.glob(".*.tmp"))  # one chorale done, one temp file left
    assert list_midi_files(out) == [out / first[0]]  # the temp file is never taken for MIDI
    record = out / ".parts" / f"{first[0].removesuffix('.mid')}.json"
    done_at = record.stat().st_mtime_ns

    manifest = export_corpus("chorales", out, workers=1, limit=3, progress=False)
    assert manifest.sources_done == 3 and len(manifest.files) + len(manifest.failed) == 3
    assert record.stat().st_mtime_ns == done_at  # the finished source was not redone
    assert not list(out.rglob("*.tmp"))
    for f in manifest.paths:
        read_score(f)
    assert load_manifest(out).files == manifest.files


def test_cache_build_killed_midway_then_run_again(tmp_path, folk_midi_files):
    files = {"train": [(f"f/{p.name}{i}", p) for i, p in enumerate(folk_midi_files[:8])],
             "val": [(f"v/{p.name}{i}", p) for i, p in enumerate(folk_midi_files[8:])]}
    spec = json.dumps({s: [[rel, str(p)] for rel, p in fl] for s, fl in files.items()})
    root = tmp_path / "cache"
    run_killed(f"""
import json, os, signal
from pathlib import Path
from musicgen.data import cache
from musicgen.data.augment import AugmentConfig
from musicgen.tokenizers import RemiTokenizer
real, calls = cache._encode_one, [0]
def dying_encode(job):
    calls[0] += 1
    if calls[0] == 5:  # tokeniser saved, some files encoded
        os.kill(os.getpid(), signal.SIGKILL)
    return real(job)
cache._encode_one = dying_encode
files = {{s: [(rel, Path(p)) for rel, p in fl] for s, fl in json.loads({spec!r}).items()}}
cache.build_or_load({str(root)!r}, files, RemiTokenizer(), AugmentConfig(copies=1), 0, progress=False)
""")
    left = [p for p in root.iterdir() if p.name != ".lock"]
    assert len(left) == 1 and ".tmp-" in left[0].name and (left[0] / "tokenizer.json").exists()

    built = token_cache.build_or_load(root, files, RemiTokenizer(), AugmentConfig(copies=1), 0, progress=False)
    assert [p.name for p in root.iterdir() if p.name != ".lock"] == [built.path.name]  # leftover removed
    assert built.meta["splits"]["train"]["files"] == 8 and not built.meta["skipped"]
    assert built.splits["train"].n_docs == 16 and built.splits["val"].n_docs == len(files["val"])


def test_checkpoint_write_that_fails_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
