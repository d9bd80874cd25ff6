"""``musicgen scale`` (conf/scale.yaml): how the data pipeline's cost grows with
the corpus (issue 15, section 4).

1. **Corpora.** Factor ``k`` is the base corpus (``base``: ``data/folk`` by default) plus ``k-1``
   variants of each of its files, each a distinct pair (transposition in semitones, tick scale
   of note times and durations), written with symusic as a new MIDI file. Every variant is
   time-stretched (no stretch is 1), so none equals a transposed training copy the pipeline
   makes itself; transpositions never leave the tokeniser's pitch range. Variants live once in
   ``work_dir/variants/vNN/<relative path>``; the corpus folder ``work_dir/x<k>`` holds symbolic
   links to the originals (``orig/``, never written through) and hard links to its variants
   (``vNN/``). Files are written to a hidden temporary name and renamed (a killed build leaves
   no partial file under a real name; one ``os.sync`` before the manifest, not one fsync per
   file); a manifest (``scale_manifest.json``) written last marks a pool or corpus complete,
   and a rerun with the same base and settings reuses it. Building is timed, not measured.
2. **Stages**, per factor, each in its own forked process so that its peak RSS
   (``getrusage(RUSAGE_SELF).ru_maxrss``; a forked child starts its own high-water mark) is that
   stage's own; the figure compared with the cache is the growth over the process's RSS at its
   start (the imports, shared with the parent), the encode workers' largest peak is reported
   beside it:

   - ``prepare``: ``MidiDataModule(root=x<k>).setup()`` with an empty cache folder, V6 REMI:
     listing, content keys and split, scan, tokenisation with the transposed training copies,
     the token cache written, the windows built. ``cache_build_s`` is the cache's own share.
   - ``serve``: a second DataModule on that cache (``setup_s``: the cached setup), then the train
     dataloader: ``epoch_start_s`` (the epoch's shuffle and first batch), windows/s over
     ``serve.batches`` batches or ``serve.max_seconds``; then, as ``make bench``'s data row, a
     third DataModule loads the cache and serves ``serve.trace_batches`` under tracemalloc.
   - ``bpe``: REMI+BPE (``bpe_tokenizer``: V7's 512) trained as the cache build trains it: on the
     files of the training split (the originals; the pipeline's transposed copies are not
     files). Tokens/s counts the base REMI tokens of those files (from the prepare stage's cache).

3. **Summary**: per factor files, tokens, seconds, files/s, tokens/s, peak RSS, traced peak, cache
   MB; ``time(k)/time(1)/(files(k)/files(1))`` per stage (at most 1: linear or better) and the
   memory over cache ratio; one verdict line per goal. ``scale.json`` is rewritten after every
   stage, so a long run that is stopped keeps what it measured.
"""

from __future__ import annotations

# isort: split
import copy
import gc
import hashlib
import json
import logging
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import symusic
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from musicgen.data.sources import MANIFEST_NAME, list_midi_files, load_manifest
from musicgen.data.split import hash_unit, subsample
from musicgen.experiments.speed import with_quick
from musicgen.experiments.speed.harness import load_average
from musicgen.fs import atomic_write_text
from musicgen.runtime import hydra_main, usable_cores

log = logging.getLogger(__name__)

#: Bumped when the variants a file gets change, so older corpora are rebuilt, not reused.
GENERATOR_VERSION = 1
#: The file that marks a variant pool or a corpus folder complete.
SCALE_MANIFEST = "scale_manifest.json"
STAGES = ("prepare", "serve", "bpe")
ORIGINALS = "orig"


# ----------------------------------------------------------------------------- variants
def variant_plan(
    lowest: int, highest: int, pitch_range: tuple[int, int], max_shift: int, stretches: list[float], flip: bool,
) -> list[tuple[int, float]]:
    """Every distinct (shift, stretch) a file spanning ``lowest..highest`` may get, in the order
    variants take them: round ``r`` pairs each valid shift (+1, -1, +2, -2, ... then 0; signs
    swapped when ``flip``) with the stretches rotated by ``r``, so the first variants both
    transpose and stretch and no pair repeats."""
    lo, hi = max(pitch_range[0], 0), min(pitch_range[1], 127)
    order = [s for d in range(1, max_shift + 1) for s in ((-d, d) if flip else (d, -d))] + [0]
    shifts = [s for s in order if lowest + s >= lo and highest + s <= hi]
    m = len(stretches)
    return [(shifts[i], stretches[(i + r) % m]) for r in range(m) for i in range(len(shifts))]


def make_variant(score: symusic.Score, shift: int, stretch: float) -> symusic.Score:
    """A copy of ``score`` with every event's time (and each note's duration) scaled by
    ``stretch`` (the tempo is kept, so the piece also plays that much longer) and the non-drum
    notes moved by ``shift`` semitones."""
    end = score.end()
    out = score.adjust_time([0, end], [0, max(1, round(end * stretch))], inplace=False)
    if shift:
        for track in out.tracks:
            if not track.is_drum:
                track.shift_pitch(shift, inplace=True)
    return out


def _pitch_span(score: symusic.Score) -> tuple[int, int] | None:
    pitches = [t.notes.numpy()["pitch"] for t in score.tracks if not t.is_drum and len(t.notes)]
    if not pitches:
        return None
    allp = np.concatenate(pitches)
    return int(allp.min()), int(allp.max())


def _write_midi(score: symusic.Score, path: Path) -> None:
    """Write to a hidden temporary file beside ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        score.dump_midi(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _build_one(job: tuple) -> tuple[str, list[int], str | None]:
    """Write the variants ``wanted`` of one base file; (its name, the indices written, why none)."""
    rel, src, pool, wanted, params = job
    try:
        score = symusic.Score(str(src))
    except Exception as e:  # symusic's parser errors
        return rel, [], f"unreadable ({e})"
    span = _pitch_span(score)
    if span is None or score.end() <= 0:
        return rel, [], "no notes"
    flip = hash_unit("scale:" + rel, params["seed"]) < 0.5
    plan = variant_plan(*span, params["pitch_range"], params["max_shift"], params["stretches"], flip)
    written = []
    for j in wanted:
        if j > len(plan):
            break
        _write_midi(make_variant(score, *plan[j - 1]), Path(pool) / f"v{j:02d}" / rel)
        written.append(j)
    return rel, written, None


def base_files(base: Path | str, cap: int | None, seed: int) -> list[tuple[str, Path]]:
    """(relative name, path) of the base corpus: the files its export manifest lists, or every
    MIDI file under it; at most ``cap`` of them, chosen as ``data.max_files`` chooses."""
    base = Path(base)
    if (base / MANIFEST_NAME).is_file():
        manifest = load_manifest(base)
        files = list(zip(manifest.files, manifest.paths))
    else:
        files = [(p.relative_to(base).as_posix(), p) for p in list_midi_files(base, key="base")]
    files = subsample(files, cap, seed)
    if not files:
        raise ValueError(f"base={base} holds no MIDI files")
    return files


def _fingerprint(files: list[tuple[str, Path]], params: dict[str, Any]) -> str:
    idents = []
    for rel, p in files:
        st = p.stat()
        idents.append([rel, st.st_size, st.st_mtime_ns])
    blob = json.dumps({"version": GENERATOR_VERSION, "params": params, "files": idents}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _map(fn, jobs: list, workers: int, desc: str, progress: bool):
    bar = dict(total=len(jobs), desc=desc, disable=not progress, mininterval=5.0)
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            yield from tqdm(pool.imap_unordered(fn, jobs, chunksize=32), **bar)
    else:
        yield from tqdm(map(fn, jobs), **bar)


def build_corpora(cfg: DictConfig, progress: bool = True) -> dict[str, Any]:
    """The corpus folder of every factor (built, or reused when its manifest says it is complete
    and was made from the same base files with the same settings)."""
    start = time.perf_counter()
    seed = int(cfg.seed)
    factors = sorted({int(k) for k in cfg.factors})
    if not factors or factors[0] < 1:
        raise ValueError(f"factors={list(cfg.factors)} must be integers >= 1")
    stretches = [float(s) for s in cfg.build.stretches]
    if not stretches or any(s <= 0 or abs(s - 1.0) < 1e-6 for s in stretches):
        raise ValueError(f"build.stretches={stretches} must be positive and none may be 1")
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    params = {"seed": seed, "max_shift": int(cfg.build.max_shift), "stretches": stretches,
              "pitch_range": list(tokenizer.pitch_range)}
    files = base_files(cfg.base, cfg.base_files, seed)
    work = Path(cfg.work_dir)
    pool = work / "variants"
    fp = _fingerprint(files, params)
    workers = int(cfg.build.workers or usable_cores())
    n_variants = factors[-1] - 1

    # 1. the variant pool
    manifest = _read_manifest(pool / SCALE_MANIFEST)
    if manifest is None or manifest.get("fingerprint") != fp:
        if pool.exists():
            log.info("scale: %s was made from other files or settings; rebuilding it", pool)
            shutil.rmtree(pool)
        manifest = {"fingerprint": fp, "params": params, "base": str(cfg.base), "base_files": len(files),
                    "variants_done": [], "files_per_variant": {}, "no_variants": {}, "build_s": 0.0}
    wanted = [j for j in range(1, n_variants + 1) if j not in manifest["variants_done"]]
    pool_s, pool_reused = 0.0, not wanted
    if wanted:
        t0 = time.perf_counter()
        log.info("scale: writing variants %d..%d of %d files into %s (%d workers)", wanted[0], wanted[-1],
                 len(files), pool, workers)
        counts = {j: 0 for j in wanted}
        jobs = [(rel, p, str(pool), wanted, params) for rel, p in files]
        for rel, written, why in _map(_build_one, jobs, workers, "scale: build variants", progress):
            if why:
                manifest["no_variants"][rel] = why
            for j in written:
                counts[j] += 1
        os.sync()  # the renamed files are on disk before the manifest says so
        pool_s = time.perf_counter() - t0
        manifest["variants_done"] = sorted(manifest["variants_done"] + wanted)
        manifest["files_per_variant"].update({str(j): n for j, n in counts.items()})
        manifest["build_s"] = round(manifest["build_s"] + pool_s, 2)
        atomic_write_text(pool / SCALE_MANIFEST, json.dumps(manifest, indent=1) + "\n")

    # 2. one folder per factor: links to the originals and to its variants
    corpora: dict[int, dict[str, Any]] = {}
    for k in factors:
        folder = work / f"x{k}"
        want = {"fingerprint": fp, "factor": k, "complete": True}
        found = _read_manifest(folder / SCALE_MANIFEST)
        if found is not None and all(found.get(key) == v for key, v in want.items()):
            corpora[k] = {**found, "dir": str(folder), "reused": True, "link_s": 0.0}
            continue
        t0 = time.perf_counter()
        tmp = work / f".x{k}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        n_orig = n_var = 0
        for rel, p in tqdm(files, desc=f"scale: link x{k}", disable=not progress, mininterval=5.0):
            dst = tmp / ORIGINALS / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(p.resolve(), dst)
            n_orig += 1
            for j in range(1, k):
                src = pool / f"v{j:02d}" / rel
                if not src.exists():
                    continue
                dst = tmp / f"v{j:02d}" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:  # another file system, or no hard links there
                    shutil.copy2(src, dst)
                n_var += 1
        body = {**want, "files": n_orig + n_var, "originals": n_orig, "variants": n_var,
                "base": str(cfg.base), "params": params}
        atomic_write_text(tmp / SCALE_MANIFEST, json.dumps(body, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        corpora[k] = {**body, "dir": str(folder), "reused": False, "link_s": time.perf_counter() - t0}
        log.info("scale: x%d: %d files (%d originals, %d variants) in %s", k, n_orig + n_var, n_orig, n_var, folder)
    return {"pool": str(pool), "pool_reused": pool_reused, "pool_s": pool_s, "pool_build_s_total": manifest["build_s"],
            "no_variants": len(manifest["no_variants"]), "fingerprint": fp, "params": params,
            "corpora": corpora, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- stages (run in a child)
def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def _datamodule(spec: dict[str, Any], tokenizer):
    from musicgen.data.datamodule import MidiDataModule

    s = spec["serve"]
    return MidiDataModule(
        tokenizer, root=spec["corpus"], data_dir=spec["work_dir"], cache_dir=spec["cache_dir"], max_files=None,
        seed=spec["seed"], augment=spec["augment"], val_frac=spec["val_frac"], test_frac=spec["test_frac"],
        encode_workers=spec["encode_workers"], progress=spec["progress"], mode=s["mode"], seq_len=s["seq_len"],
        stride=s["stride"], batch_size=s["batch_size"], num_workers=s["num_workers"],
    )


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def stage_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    from musicgen.data.cache import is_transposed_copy

    dm = _datamodule(spec, hydra.utils.instantiate(spec["tokenizer"]))
    t0 = time.perf_counter()
    dm.setup()
    seconds = time.perf_counter() - t0
    meta = dm.cache.meta
    splits = meta["splits"]
    train = dm.cache.splits["train"]
    original_tokens = int(sum(int(train.offsets[i + 1] - train.offsets[i]) - 2 for i in train.originals()))
    out = {
        "seconds": seconds, "cache_build_s": float(meta["build_seconds"]),
        "split_and_windows_s": seconds - float(meta["build_seconds"]),
        "files": len(dm.file_paths), "skipped": len(meta["skipped"]),
        "docs": sum(m["docs"] for m in splits.values()), "tokens": sum(m["tokens"] for m in splits.values()),
        "train_files": splits["train"]["files"],
        "train_copies": sum(is_transposed_copy(n) for n in train.names),
        "train_original_tokens": original_tokens, "train_windows": len(dm.datasets["train"]),
        "groups_merged": meta.get("groups_merged"), "cache_mb": _dir_bytes(dm.cache.path) / 2**20,
        "cache_path": str(dm.cache.path), "vocab_size": dm.tokenizer.vocab_size,
    }
    out["files_per_s"] = out["files"] / seconds
    out["tokens_per_s"] = out["tokens"] / seconds
    return out


def stage_prepare_traced(spec: dict[str, Any]) -> dict[str, Any]:
    """prepare again, from another empty cache folder, under tracemalloc (its time is not used)."""
    spec = {**spec, "cache_dir": spec["cache_dir"] + "-traced"}
    tracemalloc.start()
    try:
        dm = _datamodule(spec, hydra.utils.instantiate(spec["tokenizer"]))
        dm.setup()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        shutil.rmtree(spec["cache_dir"], ignore_errors=True)
    return {"traced_peak_mb": peak / 2**20}


def _serve(dm, n_batches: int, max_seconds: float, warmup: int = 0) -> dict[str, Any]:
    t0 = time.perf_counter()
    it = iter(dm.train_dataloader())
    next(it)
    epoch_start = time.perf_counter() - t0

    def batch():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(dm.train_dataloader())
            return next(it)

    for _ in range(warmup):
        batch()
    batches = windows = 0
    t0 = time.perf_counter()
    while batches < n_batches and time.perf_counter() - t0 < max_seconds:
        x, _ = batch()
        batches += 1
        windows += x.size(0)
    seconds = time.perf_counter() - t0
    return {"epoch_start_s": epoch_start, "batches": batches, "windows": windows, "serve_s": seconds}


def stage_serve(spec: dict[str, Any]) -> dict[str, Any]:
    s = spec["serve"]
    tokenizer = hydra.utils.instantiate(spec["tokenizer"])
    dm = _datamodule({**spec, "progress": False}, tokenizer)
    t0 = time.perf_counter()
    dm.setup()
    setup_s = time.perf_counter() - t0
    served = _serve(dm, int(s["batches"]), float(s["max_seconds"]), int(s["warmup_batches"]))
    out = {
        "setup_s": setup_s, **served, "dataset_windows": len(dm.datasets["train"]),
        "windows_per_s": served["windows"] / served["serve_s"],
        "tokens_per_s": served["windows"] * dm.seq_len / served["serve_s"],
        "files": len(dm.file_paths),
    }
    del dm
    gc.collect()
    # as make bench's data row: the traced (Python + numpy) peak of a DataModule loading the cache
    # and serving; the memory-mapped token arrays are file pages, not heap
    tracemalloc.start()
    try:
        traced = _datamodule({**spec, "progress": False}, tokenizer)
        traced.setup()
        _serve(traced, int(s["trace_batches"]), float("inf"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out["traced_peak_mb"] = peak / 2**20
    out["seconds"] = setup_s + served["epoch_start_s"] + served["serve_s"]
    return out


def stage_bpe(spec: dict[str, Any]) -> dict[str, Any]:
    tokenizer = hydra.utils.instantiate(spec["bpe_tokenizer"])
    dm = _datamodule({**spec, "progress": False}, tokenizer)
    t0 = time.perf_counter()
    files = dm.source_files()  # the content keys are remembered by the prepare stage's cache folder
    split_s = time.perf_counter() - t0
    paths = [p for _, p in files["train"]]
    trained = copy.deepcopy(tokenizer)  # as the cache build: the caller's tokeniser never changes
    t0 = time.perf_counter()
    trained.train(paths)
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "split_s": split_s, "files": len(paths), "vocab_size": trained.vocab_size,
           "bpe_vocab_size": tokenizer.bpe_vocab_size, "files_per_s": len(paths) / seconds}
    if spec.get("train_original_tokens"):
        out["tokens"] = spec["train_original_tokens"]
        out["tokens_per_s"] = out["tokens"] / seconds
    return out


#: (key, stage, name) of each peak compared with the cache: RSS growth of each stage, serving's traced peak.
MEMORY_MEASURES = (("rss_growth_mb", "prepare", "prepare_rss_growth"), ("rss_growth_mb", "serve", "serve_rss_growth"),
                   ("traced_peak_mb", "serve", "serve_traced"), ("rss_growth_mb", "bpe", "bpe_rss_growth"))

STAGE_FNS = {"prepare": stage_prepare, "prepare_traced": stage_prepare_traced, "serve": stage_serve,
             "bpe": stage_bpe}


def _child(stage: str, spec: dict[str, Any], out_path: str) -> None:
    baseline = _rss_now_mb()
    try:
        result = {"ok": True, **STAGE_FNS[stage](spec)}
    except BaseException as e:  # reported to the parent, which records it and goes on
        log.exception("scale: x%s %s failed", spec["factor"], stage)
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    peak = _maxrss_mb(resource.RUSAGE_SELF)
    result.update(baseline_rss_mb=baseline, peak_rss_mb=peak, rss_growth_mb=max(0.0, peak - baseline),
                  workers_peak_rss_mb=_maxrss_mb(resource.RUSAGE_CHILDREN))
    atomic_write_text(out_path, json.dumps(result, default=str))


def run_stage(stage: str, spec: dict[str, Any], heartbeat_s: float, clock_start: float) -> dict[str, Any]:
    """``stage`` in a forked child (its own peak RSS); logs while it runs; the child's result."""
    gc.collect()
    factor = spec["factor"]
    log.info("scale: x%d %s: started (run at %s)", factor, stage, _hms(time.perf_counter() - clock_start))
    with tempfile.TemporaryDirectory(prefix="musicgen-scale-") as tmp:
        out_path = os.path.join(tmp, "result.json")
        t0 = time.perf_counter()
        proc = mp.get_context("fork").Process(target=_child, args=(stage, spec, out_path), name=f"scale-{stage}")
        proc.start()
        while True:
            proc.join(timeout=max(heartbeat_s, 0.1))
            if not proc.is_alive():
                break
            log.info("scale: x%d %s: running for %s", factor, stage, _hms(time.perf_counter() - t0))
        wall = time.perf_counter() - t0
        try:
            result = json.loads(Path(out_path).read_text())
        except (OSError, ValueError):
            result = {"ok": False, "error": f"the stage's process ended with exit code {proc.exitcode} and no result"}
    result["wall_s"] = wall
    if result.get("ok"):
        log.info("scale: x%d %s: done, %.1f s timed, %.1f s in all, peak RSS %.0f MB (+%.0f MB)", factor, stage,
                 result.get("seconds", 0.0), wall, result["peak_rss_mb"], result["rss_growth_mb"])
    else:
        log.error("scale: x%d %s: failed: %s", factor, stage, result.get("error"))
    return result


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ----------------------------------------------------------------------------- summary
def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(results: dict[str, Any], goals: dict[str, float]) -> dict[str, Any]:
    """Ratios to the first factor and one verdict per goal, into ``results``."""
    factors = results["factors"]
    rows = [results["by_factor"][str(k)] for k in factors if str(k) in results["by_factor"]]
    if not rows:
        return results
    ref = rows[0]

    def get(row, stage, key):
        st = row.get(stage, {})
        return st.get(key) if st.get("ok") else None

    for row in rows:
        size = _ratio(get(row, "prepare", "files") or row["corpus"]["files"], get(ref, "prepare", "files")
                      or ref["corpus"]["files"])
        row["size_ratio"] = size
        r: dict[str, float | None] = {}
        for stage, key in (("prepare", "seconds"), ("bpe", "seconds"), ("serve", "setup_s")):
            name = "serve_setup" if stage == "serve" else stage
            r[f"{name}_time_ratio"] = _ratio(_ratio(get(row, stage, key), get(ref, stage, key)), size)
        r["serve_windows_per_s_ratio"] = _ratio(get(row, "serve", "windows_per_s"), get(ref, "serve", "windows_per_s"))
        cache = get(row, "prepare", "cache_mb")
        for key, stage, name in MEMORY_MEASURES:
            r[f"{name}_vs_cache"] = _ratio(get(row, stage, key), cache)
        if get(row, "prepare", "traced_peak_mb") is not None:
            r["prepare_traced_vs_cache"] = _ratio(get(row, "prepare", "traced_peak_mb"), cache)
        row["ratios"] = r

    def worst(keys: list[str], larger_is_worse: bool) -> tuple[float, str, int] | None:
        found = [(row["ratios"][key], key, row["factor"]) for row in rows[1:] for key in keys
                 if row["ratios"].get(key) is not None]
        if not found:
            return None
        return max(found) if larger_is_worse else min(found)

    verdicts = []
    tgoal = goals["time_ratio"]
    w = worst(["prepare_time_ratio", "bpe_time_ratio", "serve_setup_time_ratio"], True)
    if w is None:
        verdicts.append({"goal": "time", "met": None, "line": "Time linear or better: n/a (needs two factors)"})
    else:
        value, key, k = w
        each = ", ".join(f"{n.removesuffix('_time_ratio')} {rows[-1]['ratios'][n]:.2f}"
                         for n in ("prepare_time_ratio", "bpe_time_ratio", "serve_setup_time_ratio")
                         if rows[-1]["ratios"].get(n) is not None)
        met = value <= tgoal
        how = (f"{(tgoal - value) / tgoal:.0%} under the goal" if met else f"{(value - tgoal) / tgoal:.0%} over it")
        verdicts.append({"goal": "time", "met": met, "worst": value, "line":
                         f"Time linear or better (time(k)/time(1)/size ≤ {tgoal:g}): **{'met' if met else 'missed'}**; "
                         f"worst {value:.2f} ({key.removesuffix('_time_ratio')} at {k}×, {how}); "
                         f"at {rows[-1]['factor']}×: {each}"})
    sgoal = goals["serve_ratio"]
    w = worst(["serve_windows_per_s_ratio"], False)
    if w is None:
        verdicts.append({"goal": "serve", "met": None, "line": "Windows/s kept: n/a"})
    else:
        value, _, k = w
        met = value >= sgoal
        verdicts.append({"goal": "serve", "met": met, "worst": value, "line":
                         f"Windows served per second kept (windows/s(k)/windows/s(1) ≥ {sgoal:g}): "
                         f"**{'met' if met else 'missed'}**; worst {value:.2f} at {k}× "
                         f"({abs(value - sgoal) / sgoal:.0%} {'above' if met else 'below'} the goal)"})
    # memory: the extra peak each extra MB of cache costs from the first factor to the last (the
    # slope, free of the constant a stage's process adds whatever the corpus), per measure
    mgoal = goals["memory_vs_cache"]
    slopes = []
    for key, stage, name in MEMORY_MEASURES:
        for row in rows[1:]:
            m0, m1 = get(ref, stage, key), get(row, stage, key)
            c0, c1 = get(ref, "prepare", "cache_mb"), get(row, "prepare", "cache_mb")
            if None not in (m0, m1, c0, c1) and c1 > c0:
                row["ratios"][f"{name}_marginal_vs_cache"] = (m1 - m0) / (c1 - c0)
        done = [row for row in rows[1:] if row["ratios"].get(f"{name}_marginal_vs_cache") is not None]
        if done:  # judged at the largest factor where it was measured
            row = done[-1]
            slopes.append((row["ratios"][f"{name}_marginal_vs_cache"], name, row["factor"],
                           get(row, stage, key) - get(ref, stage, key),
                           get(row, "prepare", "cache_mb") - get(ref, "prepare", "cache_mb"),
                           row["ratios"].get(f"{name}_vs_cache")))
    if not slopes:
        verdicts.append({"goal": "memory", "met": None, "line": "Peak memory bounded by the cache size: n/a "
                         "(needs two factors whose prepare and stages ran)"})
    else:
        value, name, k, dm, dc, absolute = max(slopes)
        met = value <= mgoal
        each = ", ".join(f"{n.replace('_', ' ')} {v:.2f} ({f}×)" for v, n, f, *_ in slopes)
        verdicts.append({"goal": "memory", "met": met, "worst": value, "line":
                         f"Peak memory bounded by the cache size (extra peak per extra cache MB from {ref['factor']}×, "
                         f"≤ {mgoal:g}): **{'met' if met else 'missed'}**; worst {value:.2f} "
                         f"({name.replace('_', ' ')} at {k}×: {dm:+,.0f} MB for {dc:+,.0f} MB of cache, "
                         f"{abs(value - mgoal) / mgoal:.0%} {'under' if met else 'over'} the goal; there it is "
                         f"{_f(absolute, 2)}× the cache); all: {each}"})
    results["verdicts"] = verdicts
    return results


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def render_markdown(results: dict[str, Any]) -> str:
    rows = [results["by_factor"][str(k)] for k in results["factors"] if str(k) in results["by_factor"]]
    m = results["machine"]
    lines = [
        "# Data pipeline scale",
        "",
        f"Base `{results['settings']['base']}` ({results['build']['corpora'][str(rows[0]['factor'])]['originals']:,} "
        f"files), factors {results['factors']}; V6 REMI for prepare and serving, "
        f"REMI+BPE-{results['settings']['bpe_vocab_size']} for BPE; {m['cores']} usable cores, "
        f"encode_workers {results['settings']['encode_workers']}; load average {m['load_average_start']} at the start, "
        f"{m.get('load_average_end')} at the end; {m['date']}.",
        "",
        *[f"- {v['line']}" for v in results.get("verdicts", [])],
        "",
        "## Time",
        "",
        "| factor | files | tokens | prepare s | files/s | tokens/s | prepare ratio | cached setup s | "
        "windows/s | windows/s ratio | BPE s | BPE files/s | BPE ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def g(row, stage, key):
        st = row.get(stage, {})
        return st.get(key) if st.get("ok") else None

    for row in rows:
        r = row.get("ratios", {})
        lines.append(
            f"| {row['factor']}× | {_f(g(row, 'prepare', 'files'))} | {_f(g(row, 'prepare', 'tokens'))} | "
            f"{_f(g(row, 'prepare', 'seconds'))} | {_f(g(row, 'prepare', 'files_per_s'))} | "
            f"{_f(g(row, 'prepare', 'tokens_per_s'), 0)} | {_f(r.get('prepare_time_ratio'), 2)} | "
            f"{_f(g(row, 'serve', 'setup_s'), 2)} | {_f(g(row, 'serve', 'windows_per_s'), 0)} | "
            f"{_f(r.get('serve_windows_per_s_ratio'), 2)} | {_f(g(row, 'bpe', 'seconds'))} | "
            f"{_f(g(row, 'bpe', 'files_per_s'))} | {_f(r.get('bpe_time_ratio'), 2)} |"
        )
    lines += [
        "",
        "Ratios: time(k) / time(1) / (files(k) / files(1)), at most 1 is linear or better; windows/s(k) / "
        "windows/s(1). Prepare: listing, content keys, split, scan, tokenisation with 2 transposed copies per "
        "training file, cache written, windows built, from an empty cache folder. Cached setup: the same "
        "DataModule on the built cache. BPE: training on the training split's files.",
        "",
        "## Memory",
        "",
        "| factor | cache MB | prepare peak RSS MB (+growth) | encode workers' peak MB | serve peak RSS MB (+growth) | "
        "serve traced MB | BPE peak RSS MB (+growth) | prepare growth / cache | serve traced / cache | "
        "BPE growth / cache |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row.get("ratios", {})

        def peak(stage, row=row):
            p, d = g(row, stage, "peak_rss_mb"), g(row, stage, "rss_growth_mb")
            return "n/a" if p is None else f"{p:,.0f} (+{d:,.0f})"

        lines.append(
            f"| {row['factor']}× | {_f(g(row, 'prepare', 'cache_mb'))} | {peak('prepare')} | "
            f"{_f(g(row, 'prepare', 'workers_peak_rss_mb'), 0)} | {peak('serve')} | "
            f"{_f(g(row, 'serve', 'traced_peak_mb'))} | {peak('bpe')} | "
            f"{_f(r.get('prepare_rss_growth_vs_cache'), 2)} | {_f(r.get('serve_traced_vs_cache'), 2)} | "
            f"{_f(r.get('bpe_rss_growth_vs_cache'), 2)} |"
        )
    marginal = [f"{row['factor']}×: " + ", ".join(
        f"{name.replace('_', ' ')} {row['ratios'][name + '_marginal_vs_cache']:.2f}" for _, _, name in MEMORY_MEASURES
        if row.get("ratios", {}).get(name + "_marginal_vs_cache") is not None) for row in rows[1:]]
    if marginal:
        lines += ["", f"Extra peak per extra cache MB from {rows[0]['factor']}× (what the memory goal judges): "
                  + "; ".join(marginal) + "."]
    if any(g(row, "prepare", "traced_peak_mb") is not None for row in rows):
        lines += ["", "Prepare's traced peak (a second prepare under tracemalloc): " + ", ".join(
            f"{row['factor']}× {_f(g(row, 'prepare', 'traced_peak_mb'))} MB" for row in rows)]
    lines += [
        "",
        "Peak RSS: `ru_maxrss` of the stage's own forked process; growth: over its RSS when it started (the "
        "imports). Serve traced: tracemalloc's peak while a DataModule loads the cache and serves batches "
        "(the memory-mapped tokens are file pages, not heap), as `make bench`'s data row.",
        "",
        "## Failures",
        "",
    ]
    failed = [f"- {row['factor']}× {stage}: {row[stage]['error']}" for row in rows for stage in STAGES
              if stage in row and not row[stage].get("ok")]
    lines += failed or ["none"]
    b = results["build"]
    lines += ["", f"Corpora built in {b['seconds']:.1f} s ({'reused' if b['pool_reused'] else 'variants written'}; "
              f"not part of the measurement); the whole run took {_hms(results.get('elapsed_s', 0))}.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the run
def _write(results: dict[str, Any], out_dir: Path, goals: dict[str, float]) -> None:
    summarize(results, goals)
    atomic_write_text(out_dir / "scale.json", json.dumps(results, indent=1, default=str) + "\n")
    atomic_write_text(out_dir / "scale.md", render_markdown(results))


def run(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Build the corpora, measure every stage of every factor; writes ``scale.json`` and
    ``scale.md`` to ``cfg.out_dir`` (after every stage) and returns the results."""
    cfg = with_quick(cfg, overrides)
    start = time.perf_counter()
    import musicgen.data.datamodule  # noqa: F401  imported once, here: every forked stage starts with it

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    goals = {k: float(v) for k, v in cfg.goals.items()}
    encode_workers = int(cfg.encode_workers or usable_cores())
    build = build_corpora(cfg, progress=not cfg.quick)
    factors = sorted({int(k) for k in cfg.factors})
    results: dict[str, Any] = {
        "machine": {"cores": usable_cores(), "load_average_start": load_average(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "settings": {"base": str(cfg.base), "base_files": cfg.base_files, "encode_workers": encode_workers,
                     "bpe_vocab_size": cfg.bpe_tokenizer.bpe_vocab_size,
                     "augment": OmegaConf.to_container(cfg.augment), "serve": OmegaConf.to_container(cfg.serve),
                     "goals": goals, "trace_prepare": bool(cfg.trace_prepare)},
        "build": {**build, "corpora": {str(k): v for k, v in build["corpora"].items()}},
        "factors": factors,
        "by_factor": {},
    }
    work = Path(cfg.work_dir)
    for k in factors:
        corpus = build["corpora"][k]
        cache_dir = work / "cache" / f"x{k}"
        shutil.rmtree(cache_dir, ignore_errors=True)  # prepare starts from an empty cache folder
        shutil.rmtree(str(cache_dir) + "-traced", ignore_errors=True)
        spec = {
            "factor": k, "corpus": corpus["dir"], "cache_dir": str(cache_dir), "work_dir": str(work),
            "seed": int(cfg.seed), "augment": OmegaConf.to_container(cfg.augment),
            "val_frac": float(cfg.val_frac), "test_frac": float(cfg.test_frac), "encode_workers": encode_workers,
            "progress": bool(cfg.pipeline_progress), "serve": OmegaConf.to_container(cfg.serve),
            "tokenizer": OmegaConf.to_container(cfg.tokenizer),
            "bpe_tokenizer": OmegaConf.to_container(cfg.bpe_tokenizer),
        }
        row: dict[str, Any] = {"factor": k, "corpus": {key: corpus[key] for key in ("dir", "files", "originals",
                                                                                     "variants", "reused")}}
        results["by_factor"][str(k)] = row
        row["prepare"] = run_stage("prepare", spec, float(cfg.heartbeat_s), start)
        _write(results, out_dir, goals)
        if row["prepare"].get("ok"):
            spec["train_original_tokens"] = row["prepare"]["train_original_tokens"]
            if cfg.trace_prepare:
                traced = run_stage("prepare_traced", spec, float(cfg.heartbeat_s), start)
                row["prepare"]["traced_peak_mb"] = traced.get("traced_peak_mb")
                row["prepare_traced"] = traced
            row["serve"] = run_stage("serve", spec, float(cfg.heartbeat_s), start)
        else:
            row["serve"] = {"ok": False, "error": "not run: prepare failed"}
        _write(results, out_dir, goals)
        row["bpe"] = run_stage("bpe", spec, float(cfg.heartbeat_s), start)
        if not cfg.keep_caches:
            shutil.rmtree(cache_dir, ignore_errors=True)
        results["elapsed_s"] = time.perf_counter() - start
        _write(results, out_dir, goals)
    results["machine"]["load_average_end"] = load_average()
    results["elapsed_s"] = time.perf_counter() - start
    _write(results, out_dir, goals)
    log.info("wrote %s and %s", out_dir / "scale.json", out_dir / "scale.md")
    for verdict in results.get("verdicts", []):
        log.info("%s", verdict["line"].replace("**", ""))
    return results


@hydra_main("scale")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
