"""The token cache: one flat token array per split plus per-document offsets, memory-mapped.

Built once per (file list, split, augmentation, tokeniser config, seed), reused by every run
that matches and rebuilt when any of them changes. Each document is stored as
``BOS ids EOS``, so a split's array is already the packed stream windows run over; beside it
the note count of each document's source file (``notes``: the same for every tokeniser, what
NLL per note divides by). The trained tokeniser is saved beside the arrays. The cache is
written into a temporary directory and renamed into place, so a killed build leaves nothing a
later run trusts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import symusic
from tqdm.auto import tqdm

from musicgen.constants import BOS_ID, EOS_ID
from musicgen.data.augment import AugmentConfig, transpositions
from musicgen.errors import CheckpointError
from musicgen.fs import atomic_write_text, exclusive
from musicgen.midi_io import read_score
from musicgen.tokenizers import load_tokenizer
from musicgen.tokenizers.base import BadMidiError, MusicTokenizer

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: per-document source note counts ({split}.notes.npy)
FileList = Sequence[tuple[str, Path]]  # (relative name, path)

#: suffix of a transposed copy's name (``folk/a.mid@+3``)
_COPY_SUFFIX = re.compile(r"@[+-]\d+$")


def is_transposed_copy(name: str) -> bool:
    """Whether a document name is a transposed training copy (``folk/a.mid@+3``), not an original."""
    return _COPY_SUFFIX.search(name) is not None


@dataclass
class SplitTokens:
    """One split of the cache: documents ``tokens[offsets[i]:offsets[i+1]]``, ``notes[i]`` notes each."""

    tokens: np.ndarray  # (N,) uint16 or int32, memory-mapped
    offsets: np.ndarray  # (n_docs + 1,) int64
    names: list[str]
    notes: np.ndarray  # (n_docs,) int64: notes of the source file (a transposed copy: its original's)

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def originals(self) -> np.ndarray:
        """Indices of the untransposed documents (what evaluation's references use)."""
        return np.array([i for i, n in enumerate(self.names) if not is_transposed_copy(n)], dtype=np.int64)


@dataclass
class TokenCache:
    path: Path
    tokenizer: MusicTokenizer
    splits: dict[str, SplitTokens]
    meta: dict

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"


def cache_key(
    files: dict[str, FileList], tokenizer: MusicTokenizer, augment: AugmentConfig, seed: int,
    groups: dict | None = None,
) -> str:
    """Hash of everything that changes the cached tokens (file identity by size and mtime) and of
    the split's figures stored in meta.json (``groups``), so a cache never reports another split's."""

    def ident(path: Path) -> list:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]

    payload = {
        "format": CACHE_FORMAT,
        "tokenizer": type(tokenizer).__name__,
        "tokenizer_config": tokenizer.config_dict(),
        "tokenizer_learns_from_copies": getattr(tokenizer, "learns_from_copies", False),
        "augment": asdict(augment),
        "seed": seed,
        "files": {s: [[rel, *ident(p)] for rel, p in fl] for s, fl in sorted(files.items())},
        "split": groups or {},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_or_load(
    cache_root: Path | str,
    files: dict[str, FileList],
    tokenizer: MusicTokenizer,
    augment: AugmentConfig,
    seed: int,
    workers: int = 1,
    progress: bool = True,
    groups: dict[str, int] | None = None,
) -> TokenCache:
    """The cache for these inputs, building it first if no matching one exists.

    ``groups``: figures about the split (``musicgen.data.split.merged_groups``), stored in meta.json.
    """
    cache_root = Path(cache_root)
    key = cache_key(files, tokenizer, augment, seed, groups)
    final = cache_root / key
    with exclusive(cache_root):  # DDP ranks and parallel runs share the cache
        _remove_leftovers(cache_root)
        if not (final / "meta.json").exists():
            _build(final, files, tokenizer, augment, seed, workers, progress, groups or {})
        else:
            log.info("reusing token cache %s", final)
    return load(final)


def _remove_leftovers(cache_root: Path) -> None:
    """Temporary build directories of killed builds (never trusted; only their space is lost).
    Called under the lock, so no live build owns one: each build removes its own when it ends."""
    for tmp in cache_root.glob(".*.tmp-*"):
        log.info("removing %s, left by an interrupted cache build", tmp)
        shutil.rmtree(tmp)


def load(path: Path | str) -> TokenCache:
    """A built cache; one of another format (an older musicgen's) is refused, never half read."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format") != CACHE_FORMAT:
        raise CheckpointError(
            f"the token cache {path} has format {meta.get('format')}, this musicgen reads format {CACHE_FORMAT} "
            "(with the source note count of each piece): train the same config again to rebuild it"
        )
    splits = {}
    for s, info in meta["splits"].items():
        splits[s] = SplitTokens(
            tokens=np.load(path / f"{s}.tokens.npy", mmap_mode="r"),
            offsets=np.load(path / f"{s}.offsets.npy"),
            names=info["names"],
            notes=np.load(path / f"{s}.notes.npy"),
        )
    return TokenCache(path, load_tokenizer(path / "tokenizer.json"), splits, meta)


# ----------------------------------------------------------------------------- building

def _scan_one(path: Path) -> tuple[int, int, int] | str:
    """Lowest and highest pitch and number of notes of a usable file, or the reason it is unusable."""
    try:
        score = read_score(path)
    except BadMidiError as e:
        return str(e)
    pitches = score.tracks[0].notes.numpy()["pitch"]
    return int(pitches.min()), int(pitches.max()), len(pitches)


def _with_copies(jobs: list[tuple[Path, list[int]]]) -> Iterator[symusic.Score]:
    """The scores of ``(path, shifts)`` jobs, each file transposed by each of its shifts (0 = the
    original), one file read at a time: what a tokeniser that ``learns_from_copies`` learns from."""
    for path, shifts in jobs:
        score = read_score(path)
        for s in shifts:
            yield score.shift_pitch(s) if s else score


_worker_tokenizer: MusicTokenizer | None = None


def _init_worker(tokenizer_path: str) -> None:
    global _worker_tokenizer

    _worker_tokenizer = load_tokenizer(tokenizer_path)


def _encode_one(job: tuple[Path, list[int]]) -> list[list[int]] | str:
    """Ids of a file and of each of its transpositions (offset 0 = the original), or the reason
    the tokeniser cannot use it (e.g. every note outside its pitch range)."""
    path, shifts = job
    score = read_score(path)
    try:
        return [_worker_tokenizer.encode(score.shift_pitch(s) if s else score) for s in shifts]
    except BadMidiError as e:
        return str(e)


def _map(fn, jobs: list, workers: int, desc: str, progress: bool, initargs=None):
    if workers > 1 and len(jobs) >= 200:
        # fork, like torch's DataLoader workers: spawn would re-import the caller's __main__
        # (and its torch) in every worker; the workers only run symusic and MidiTok
        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_init_worker if initargs else None, initargs=initargs or ()) as pool:
            yield from tqdm(pool.imap(fn, jobs, chunksize=16), total=len(jobs), desc=desc, disable=not progress)
    else:
        if initargs:
            _init_worker(*initargs)
        yield from tqdm(map(fn, jobs), total=len(jobs), desc=desc, disable=not progress)


def _raw_to_npy(raw: Path, path: Path, dtype: np.dtype, n: int) -> None:
    """``path``: the ``.npy`` file ``np.save`` writes for the ``n`` values of ``dtype`` in the headerless
    file ``raw``, copied a few MB at a time (never all in memory); ``raw`` is removed."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
    with open(raw, "rb") as src, open(path, "wb") as dst:
        np.lib.format.write_array_header_1_0(dst, header)
        shutil.copyfileobj(src, dst, 4 << 20)
    raw.unlink()


def _build(
    final: Path,
    files: dict[str, FileList],
    tokenizer: MusicTokenizer,
    augment: AugmentConfig,
    seed: int,
    workers: int,
    progress: bool,
    groups: dict[str, int],
) -> None:
    t0 = time.perf_counter()
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # 1. scan: skip unusable files (one warning each), learn each file's pitch span and note count
        all_files = [(s, rel, p) for s, fl in files.items() for rel, p in fl]
        spans, skipped = {}, []  # (split, rel) -> (lowest pitch, highest pitch, notes)
        scans = _map(_scan_one, [p for _, _, p in all_files], workers, "scan MIDI", progress)
        for (s, rel, _), res in zip(all_files, scans):
            if isinstance(res, str):
                log.warning("skipping %s", res)
                skipped.append({"file": rel, "reason": res})
            else:
                spans[(s, rel)] = res
        if skipped:
            log.warning("skipped %d of %d files (see meta.json in %s)", len(skipped), len(all_files), final)
        good = {s: [(rel, p) for rel, p in fl if (s, rel) in spans] for s, fl in files.items()}
        if not good.get("train"):
            raise ValueError(f"no usable training files left after filtering ({len(skipped)} skipped)")

        # 2. the transpositions of each training file (0 = the original); the pitch range they
        #    must stay in is part of the tokeniser's config, known before training
        jobs: dict[str, list[tuple[Path, list[int]]]] = {}  # split -> (path, shifts) per file
        for s, fl in good.items():
            jobs[s] = []
            for rel, p in fl:
                lo, hi, _ = spans[(s, rel)]
                copies = transpositions(rel, lo, hi, tokenizer.pitch_range, augment, seed) if s == "train" else []
                jobs[s].append((p, [0, *copies]))

        # 3. train the tokeniser on the training split only. One that ``learns_from_copies`` (a
        #    vocabulary of strings) learns from everything the model trains on, the originals and
        #    their transposed copies, so that no training token is UNK; the others (BPE merges) from
        #    the originals. A copy, so the caller's untrained tokeniser (and the cache key) never change
        tokenizer = copy.deepcopy(tokenizer)
        if getattr(tokenizer, "learns_from_copies", False):
            tokenizer.train(_with_copies(jobs["train"]))
        else:
            tokenizer.train([p for _, p in good["train"]])
        tokenizer.save(tmp / "tokenizer.json")

        # 4. encode, with the transposed copies of training files; each document is written to disk
        #    as ``BOS ids EOS`` as it arrives, so only its length, name and note count stay in memory
        meta_splits = {}
        dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max else np.int32)
        for s, fl in good.items():
            lengths, names, notes = array("q"), [], []
            encoded = _map(_encode_one, jobs[s], workers, f"encode {s}", progress, (str(tmp / "tokenizer.json"),))
            with open(tmp / f"{s}.tokens.bin", "wb") as raw:
                for (rel, _), (_, file_shifts), many in zip(fl, jobs[s], encoded):
                    if isinstance(many, str):
                        log.warning("skipping %s", many)
                        skipped.append({"file": rel, "reason": many})
                        continue
                    for d in many:
                        doc = np.empty(len(d) + 2, dtype=dtype)
                        doc[0], doc[1:-1], doc[-1] = BOS_ID, d, EOS_ID
                        raw.write(doc.tobytes())
                        lengths.append(len(doc))
                    names += [rel if k == 0 else f"{rel}@{k:+d}" for k in file_shifts]
                    notes += [spans[(s, rel)][2]] * len(file_shifts)
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(np.frombuffer(lengths, dtype=np.int64), out=offsets[1:])
            _raw_to_npy(tmp / f"{s}.tokens.bin", tmp / f"{s}.tokens.npy", dtype, int(offsets[-1]))
            np.save(tmp / f"{s}.offsets.npy", offsets)
            np.save(tmp / f"{s}.notes.npy", np.array(notes, dtype=np.int64))
            meta_splits[s] = {"files": len(fl), "docs": len(lengths), "tokens": int(offsets[-1]),
                              "notes": int(sum(notes)), "names": names}

        meta = {
            "format": CACHE_FORMAT,
            "key": final.name,
            "tokenizer": type(tokenizer).__name__,
            "vocab_size": tokenizer.vocab_size,
            "seed": seed,
            "augment": asdict(augment),
            "skipped": skipped,
            **groups,
            "build_seconds": round(time.perf_counter() - t0, 2),
            "splits": meta_splits,
        }
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))
        os.replace(tmp, final)  # atomic: the directory appears complete or not at all
        log.info(
            "token cache %s: %s in %.1fs",
            final,
            ", ".join(f"{s} {m['docs']} docs / {m['tokens']} tokens" for s, m in meta_splits.items()),
            meta["build_seconds"],
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
