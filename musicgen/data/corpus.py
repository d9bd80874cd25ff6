"""Exporting the corpora embedded in music21 to MIDI (``python -m musicgen.prepare``).

The embedded corpora are exported once to plain MIDI files so that everything downstream only
ever reads MIDI (``musicgen.data.sources`` lists them):

- ``folk``: every tune of music21's ABC folk collections (Essen, O'Neill's 1850, Aird's Airs,
  Ryan's Mammoth Collection, misc folk), melody only, one file per tune:
  ``folk/<collection>/<abc-file-stem>/<tune-index:04d>.mid`` (index = position in the file).
- ``chorales``: the Bach chorales of music21's ``bach`` folder, all parts: ``chorales/<stem>.mid``.

The export is parallel (one work unit = one source file), resumable and atomic: each tune is
written atomically, and a source counts as done only once its record ``.parts/<source>.json``
exists (written atomically after all its tunes). A killed run therefore redoes only the source
files that had no record, and a finished export is recognised without importing music21.

``max_files`` exports only the pieces a DataModule capped at ``data.max_files`` trains on (the
same stable hash order over piece names, ``musicgen.data.split.subsample``): folk tunes are
named from the ABC text alone, so the others are never parsed. Such a source's record lists the
tunes it covers (``tunes``), the manifest counts it as partial, and a later export that wants
more (a larger cap, or all) converts only the tunes still missing.

music21 is imported inside the functions that need it, so that checking a finished export (a
rerun of ``python -m musicgen.prepare``) takes a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicgen.data.music21_midi import melody_midi_bytes, parse_abc_tune, score_midi_bytes, split_abc_tunes
from musicgen.data.sources import MANIFEST_NAME, Manifest, check_corpora
from musicgen.data.split import subsample
from musicgen.fs import atomic_write_bytes, atomic_write_text, exclusive

log = logging.getLogger(__name__)

#: music21 corpus folders holding the monophonic folk tunes (ABC, usually many tunes per file).
FOLK_COLLECTIONS = ("essenFolksong", "oneills1850", "airdsAirs", "ryansMammoth", "miscFolk")
#: Files of music21's ``bach`` folder that are not chorales: BWV 846 is the C major prelude of
#: the Well-Tempered Clavier. Everything else there is a chorale (some in several versions, e.g.
#: ``bwv18.5-lz`` and ``bwv18.5-w``, each kept); the three ``.krn`` files duplicate ``.mxl``
#: files and are not read.
NOT_CHORALES = frozenset({"bwv846"})
PARTS_DIR = ".parts"
#: Bumped when the export changes what it writes, so older part records are redone, not trusted.
EXPORT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Source files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One music21 corpus file: the unit of work, of resumption and of failure bookkeeping."""

    corpus: str
    path: Path  # the ABC / MusicXML file inside music21
    rel: str  # its path relative to music21's corpus folder, e.g. "essenFolksong/altdeu10.abc"

    @property
    def key(self) -> str:
        """Path of its outputs inside the corpus folder, without suffix (``oneills1850/0001-0050``)."""
        stem = self.rel.rsplit(".", 1)[0]
        return stem.split("/", 1)[1] if self.corpus == "chorales" else stem

    @property
    def record_rel(self) -> str:
        return f"{PARTS_DIR}/{self.key}.json"

    def piece_names(self) -> list[str]:
        """The names of the MIDI files this source can yield, by piece index (folk: one per tune,
        known from the ABC text without parsing it)."""
        if self.corpus == "chorales":
            return [f"{self.key}.mid"]
        n = len(split_abc_tunes(self.path.read_text(encoding="utf-8")))
        return [f"{self.key}/{i:04d}.mid" for i in range(n)]



def music21_corpus_dir() -> Path:
    """music21's bundled corpus folder, found without importing music21 (which takes a second)."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("music21 is not installed; it provides the embedded corpora")
    return Path(list(spec.submodule_search_locations)[0]) / "corpus"


def list_sources(name: str, corpus_root: Path | None = None) -> list[Source]:
    """The source files of corpus ``name`` in a fixed order (collection, then file name)."""
    root = corpus_root or music21_corpus_dir()
    if name == "folk":
        paths = [p for c in FOLK_COLLECTIONS for p in sorted((root / c).glob("*.abc"))]
    elif name == "chorales":
        paths = sorted(
            p for p in (root / "bach").iterdir()
            if p.suffix in (".mxl", ".xml") and p.name.rsplit(".", 1)[0] not in NOT_CHORALES
        )
    else:
        check_corpora([name])
    return [Source(name, p, p.relative_to(root).as_posix()) for p in paths]


def _read_record(corpus_dir: Path, source: Source) -> dict[str, Any] | None:
    """The completion record of ``source`` if it can be trusted: current version, files present."""
    path = corpus_dir / source.record_rel
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable part record (%s); redoing %s", path, e, source.rel)
        return None
    if record.get("version") != EXPORT_VERSION or record.get("source") != source.rel:
        return None
    if not all((corpus_dir / f).is_file() for f in record["files"]):
        log.warning("%s: files listed in its record are missing; redoing it", source.rel)
        return None
    return record


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def export_corpus(
    name: str,
    out_dir: Path | str,
    workers: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    corpus_root: Path | None = None,
    max_files: int | None = None,
    seed: int = 0,
) -> Manifest:
    """Export corpus ``name`` (``folk`` or ``chorales``) as MIDI into ``out_dir``; return its manifest.

    Source files that already have a trusted record are not parsed again. ``limit`` caps how
    many source files (in ``list_sources`` order) this call makes sure are done (for tests and
    quick trials). ``max_files`` makes sure of the ``max_files`` pieces a DataModule with
    ``data.max_files=max_files`` and ``seed`` trains on, and converts no other (when some of them
    fail to convert, the next ones in the same order replace them, as the DataModule's choice
    among the exported files would). The manifest always lists every exported piece. One export at
    a time per ``out_dir``: parallel runs (the leaderboard's, DDP ranks) on a fresh data directory
    wait for the first, then reuse its files.
    """
    out = Path(out_dir)
    with exclusive(out):
        return _export_corpus(name, out, workers, limit, progress, corpus_root, max_files, seed)


def _export_corpus(name: str, out: Path, workers: int | None, limit: int | None, progress: bool,
                   corpus_root: Path | None, max_files: int | None, seed: int) -> Manifest:
    sources = list_sources(name, corpus_root)
    records = {s.rel: r for s in sources if (r := _read_record(out, s)) is not None}
    if max_files is None:
        _export(name, out, [(s, None) for s in sources[:limit] if _covers(records.get(s.rel), None) is not True],
                records, workers, progress)
    else:
        pieces = [(f"{name}/{piece}", (s, i)) for s in sources[:limit] for i, piece in enumerate(s.piece_names())]
        k = max_files
        while True:
            chosen = subsample(pieces, k, seed)
            wanted: dict[str, tuple[Source, set[int]]] = {}
            for _, (s, i) in chosen:
                wanted.setdefault(s.rel, (s, set()))[1].add(i)
            todo = [(s, want) for s, want in wanted.values() if not _covers(records.get(s.rel), want)]
            _export(name, out, todo, records, workers, progress)
            exported = {f"{name}/{f}" for rel in wanted for f in records[rel]["files"]}
            ok = sum(piece in exported for piece, _ in chosen)
            if ok >= max_files or k >= len(pieces):
                break
            k += max_files - ok  # the next pieces in the same order replace those that failed
    manifest = _manifest(out, sources, records)
    _write_if_changed(out / MANIFEST_NAME, manifest.to_json())
    n_failed = len(manifest.failed)
    log.info(
        "%s: %d MIDI files, %d failed (%.1f%%), %d/%d source files done%s -> %s",
        name, len(manifest.files), n_failed,
        100 * n_failed / max(1, n_failed + len(manifest.files)),
        manifest.sources_done, manifest.sources_total,
        f", {manifest.sources_partial} partly" if manifest.sources_partial else "", out,
    )
    return manifest


def _covers(record: dict[str, Any] | None, want: set[int] | None) -> bool:
    """Whether ``record`` already covers (exported or failed) the pieces ``want`` (None: all)."""
    if record is None:
        return False
    if "tunes" not in record:
        return True
    return want is not None and want <= set(record["tunes"])


def _export(name: str, out: Path, todo: list[tuple[Source, set[int] | None]], records: dict[str, dict[str, Any]],
            workers: int | None, progress: bool) -> None:
    """Export ``todo`` (source, tune indices or None for all) and put the new records in ``records``."""
    if not todo:
        return
    from tqdm.contrib.logging import logging_redirect_tqdm  # warnings print above the bar

    t0 = time.perf_counter()
    with logging_redirect_tqdm():
        for record in _run(todo, out, workers, progress, desc=name):
            before = records.get(record["source"])
            new_failures = record["failed"][len(before["failed"]) if before else 0:]
            records[record["source"]] = record
            for f in new_failures:
                log.warning("%s: not exported: %s", f["source"], f["reason"])
    log.info("%s: exported %d source files in %.1f s", name, len(todo), time.perf_counter() - t0)


def _run(todo: list[tuple[Source, set[int] | None]], out: Path, workers: int | None, progress: bool, desc: str):
    """Yield the record of each source in ``todo`` as it finishes (in a process pool if useful)."""
    from tqdm import tqdm

    workers = min(workers or os.cpu_count() or 1, len(todo))
    # Largest files first: a 300-tune Essen file started last would leave the other cores idle.
    todo = sorted(todo, key=lambda job: job[0].path.stat().st_size, reverse=True)
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress)
    with bar:
        if workers <= 1:
            for source, tunes in todo:
                yield export_source(source, out, tunes)
                bar.update()
            return
        import multiprocessing as mp

        with mp.Pool(workers) as pool:
            for record in pool.imap_unordered(_export_source_star, [(s, out, t) for s, t in todo]):
                yield record
                bar.update()


def _export_source_star(args: tuple[Source, Path, set[int] | None]) -> dict[str, Any]:
    return export_source(*args)


def export_source(source: Source, corpus_dir: Path, tunes: set[int] | None = None) -> dict[str, Any]:
    """Export the pieces of one source file (``tunes``: only these tune indices of a folk file;
    None: all), then write (and return) its record, merged with an earlier partial one's."""
    _remove_stale_temps(corpus_dir, source)
    earlier = _read_record(corpus_dir, source) or {"files": [], "failed": [], "tunes": []}
    if source.corpus == "folk":
        done = set(earlier.get("tunes", []))
        files, failed, n_tunes = _export_folk_file(source, corpus_dir, None if tunes is None else tunes - done, done)
        covered = done | (set(range(n_tunes)) if tunes is None else tunes)
    else:
        files, failed = _export_chorale(source, corpus_dir)
        covered, n_tunes = {0}, 1
    record = {"version": EXPORT_VERSION, "source": source.rel,
              "files": sorted(set(earlier["files"]) | set(files)), "failed": earlier["failed"] + failed}
    if len(covered & set(range(n_tunes))) < n_tunes:
        record["tunes"] = sorted(covered)
    atomic_write_text(corpus_dir / source.record_rel, json.dumps(record) + "\n")
    return record


def _remove_stale_temps(corpus_dir: Path, source: Source) -> None:
    """Delete temp files a killed run left for ``source`` (never listed or trusted, only untidy)."""
    if source.corpus == "folk":
        stale = (corpus_dir / source.key).glob(".*.tmp")
    else:
        stale = corpus_dir.glob(f".{source.key}.mid.*.tmp")
    for tmp in stale:
        tmp.unlink(missing_ok=True)


def _export_folk_file(
    source: Source, corpus_dir: Path, tunes: set[int] | None, skip: set[int]
) -> tuple[list[str], list[dict[str, Any]], int]:
    names, failed, n_tunes = export_abc_file(source.path, corpus_dir / source.key, tunes, skip)
    files = [f"{source.key}/{name}" for name in names]
    return files, [{"source": f"{source.rel}#{f['tune']:04d}", "reason": f["reason"]} for f in failed], n_tunes


def export_abc_file(
    abc_path: Path | str, out_dir: Path | str, tunes: set[int] | None = None, skip: set[int] = frozenset()
) -> tuple[list[str], list[dict[str, Any]], int]:
    """Write the melody of each tune of an ABC file to ``out_dir/<tune-index:04d>.mid``.

    ``tunes``: only these tune indices (None: all); ``skip``: never these. Returns the names
    written, the failures (``{"tune": index, "reason": ...}``; a tune that music21 cannot read or
    write is a failure, never a reason to stop the file) and the number of tunes in the file.
    """
    out_dir = Path(out_dir)
    texts = split_abc_tunes(Path(abc_path).read_text(encoding="utf-8"))
    names, failed = [], []
    for i, tune in enumerate(texts):
        if i in skip or (tunes is not None and i not in tunes):
            continue
        try:
            data = melody_midi_bytes(parse_abc_tune(tune))
        except Exception as e:  # any music21 failure on one tune: recorded, listed, reported
            failed.append({"tune": i, "reason": _reason(e)})
            continue
        atomic_write_bytes(out_dir / f"{i:04d}.mid", data)
        names.append(f"{i:04d}.mid")
    return names, failed, len(texts)


def _export_chorale(source: Source, corpus_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    rel = f"{source.key}.mid"
    try:
        export_score_file(source.path, corpus_dir / rel)
    except Exception as e:  # recorded and listed like a folk tune failure
        return [], [{"source": source.rel, "reason": _reason(e)}]
    return [rel], []


def export_score_file(path: Path | str, out_path: Path | str) -> None:
    """Write every part of a score file music21 reads (MusicXML...) to one MIDI file."""
    from music21 import converter

    # forceSource: parse the file itself, never read or write music21's pickle cache.
    atomic_write_bytes(out_path, score_midi_bytes(converter.parse(Path(path), forceSource=True)))


def _reason(e: Exception) -> str:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first_line[:200]}"














def _manifest(out: Path, sources: Sequence[Source], records: dict[str, dict[str, Any]]) -> Manifest:
    done = [records[s.rel] for s in sources if s.rel in records]
    return Manifest(
        root=out,
        files=sorted(f for r in done for f in r["files"]),
        failed=sorted((f for r in done for f in r["failed"]), key=lambda f: f["source"]),
        sources_done=sum("tunes" not in r for r in done),
        sources_total=len(sources),
        sources_partial=sum("tunes" in r for r in done),
    )


def _write_if_changed(path: Path, text: str) -> None:
    """Write atomically unless the file already holds ``text`` (a finished rerun touches nothing)."""
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        pass
    atomic_write_text(path, text)
