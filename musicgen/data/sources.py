"""Where training MIDI comes from: the exported embedded corpora, a user's folder, MAESTRO.

- ``folk`` and ``chorales`` (``CORPORA``): exported from music21 to MIDI by
  ``musicgen.data.corpus``, each into a folder whose ``manifest.json`` (``Manifest``) lists the
  files; ``load_manifest`` reads it.
- a folder of the user's ``.mid``/``.midi`` files: ``list_midi_files``.
- MAESTRO v3: ``list_maestro``, split as its csv says.

A configured path that does not exist is a ``DataPathError`` naming the key to set. Standard
library only (``musicgen.midi_io`` is imported where a MIDI suffix is needed), so checks of
paths and manifests import neither music21 nor the MIDI stack.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicgen.constants import MIDI_SUFFIXES
from musicgen.errors import ConfigError, UserError

#: The corpora embedded in music21 that ``musicgen.data.corpus`` exports (``data.corpora``).
CORPORA = ("folk", "chorales")
#: The file an export writes into each corpus folder, listing its MIDI files.
MANIFEST_NAME = "manifest.json"
MAESTRO_CSV = "maestro-v3.0.0.csv"
#: MAESTRO's csv split -> musicgen's split of the same files.
MAESTRO_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def check_corpora(names) -> None:
    """A ``ConfigError`` naming the corpora that are not embedded ones."""
    unknown = [n for n in names if n not in CORPORA]
    if unknown:
        raise ConfigError(f"corpora={list(names)}: {unknown} unknown; choose from {list(CORPORA)}")


class DataPathError(UserError, FileNotFoundError):
    """A configured data path that does not exist; the message says which key to set."""


def require_dir(
    path: Path | str,
    key: str = "data.root",
    example: str = "/path/to/your/midi",
    what: str = "a folder of .mid/.midi files",
) -> Path:
    """``path`` as a Path if it is an existing folder, else a ``DataPathError`` saying how to set it."""
    path = Path(path).expanduser()
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DataPathError(f"{key}={path} {state}; set {key}={example} ({what})")
    return path


@dataclass
class Manifest:
    """What an exported corpus folder holds: ``files`` are relative to ``root``, sorted.

    ``sources_done`` counts source files exported whole, ``sources_partial`` those of which only
    the pieces a capped run needed were (``musicgen.data.corpus``, ``max_files``).
    """

    root: Path
    files: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    sources_done: int = 0
    sources_total: int = 0
    sources_partial: int = 0

    @property
    def paths(self) -> list[Path]:
        return [self.root / f for f in self.files]

    @property
    def complete(self) -> bool:
        return self.sources_done == self.sources_total

    def to_json(self) -> str:
        body = {
            "files": self.files,
            "failed": self.failed,
            "sources_done": self.sources_done,
            "sources_total": self.sources_total,
            "sources_partial": self.sources_partial,
        }
        return json.dumps(body, indent=1) + "\n"


def load_manifest(corpus_dir: Path | str) -> Manifest:
    """The manifest an export wrote into ``corpus_dir`` (``data/folk``...)."""
    root = Path(corpus_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DataPathError(
            f"{path} does not exist; run `python -m musicgen.prepare` to export the embedded corpora"
        )
    body = json.loads(path.read_text())
    return Manifest(root=root, **body)


def list_midi_files(root: Path | str, key: str = "data.root") -> list[Path]:
    """Every ``.mid``/``.midi`` file under ``root`` (any case, any depth), sorted by path.

    Hidden files (names starting with ``.``, such as the temp files of an interrupted atomic
    write) and hidden folders are left out. ``key`` names the config key in the error message.
    """

    root = require_dir(root, key)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(MIDI_SUFFIXES):
                found.append(Path(dirpath) / name)
    return sorted(found)


def list_maestro(root: Path | str, key: str = "data.maestro_root") -> dict[str, list[Path]]:
    """MAESTRO v3 MIDI files by the split its csv assigns (``train``, ``validation``, ``test``).

    Files named in the csv but absent are an error: a partial download would otherwise change
    the splits silently.
    """
    root = require_dir(root, key, "/path/to/maestro-v3.0.0", f"the unpacked MAESTRO v3 folder holding {MAESTRO_CSV}")
    csv_path = root / MAESTRO_CSV
    if not csv_path.is_file():
        raise DataPathError(f"{key}={root} has no {MAESTRO_CSV}; set {key} to the unpacked maestro-v3.0.0 folder")
    splits: dict[str, list[Path]] = {s: [] for s in MAESTRO_SPLITS}
    missing = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            split = row["split"]
            if split not in splits:
                raise ValueError(f"{csv_path}: unknown split {split!r} for {row['midi_filename']}")
            path = root / row["midi_filename"]
            (splits[split] if path.is_file() else missing).append(path)
    if missing:
        raise DataPathError(
            f"{key}={root}: {len(missing)} MIDI files named in {MAESTRO_CSV} are missing, e.g. {missing[0]}"
        )
    return {s: sorted(p) for s, p in splits.items()}



# ----------------------------------------------------------------------------- document names

def document_name(source: str, rel: Path | str) -> str:
    """A document's name in every split, cache and report: ``<source>/<path relative to its root>``,
    the source being ``user`` (``data.root``), an embedded corpus (``folk``, ``chorales``) or ``maestro``."""
    return f"{source}/{Path(rel).as_posix()}"


def document_files(data: Mapping[str, Any]) -> dict[str, Path]:
    """Document name -> source MIDI file for a run's ``data`` config (``root``, else the embedded
    ``corpora`` under ``data_dir``; plus ``maestro_root``), as the DataModule names them."""
    out: dict[str, Path] = {}
    if data.get("root"):
        root = Path(data["root"])
        out.update({document_name("user", p.relative_to(root)): p for p in list_midi_files(root)})
    else:
        data_dir = Path(data.get("data_dir", "data"))
        for corpus in data.get("corpora") or ["folk"]:
            for rel in load_manifest(data_dir / corpus).files:
                out[document_name(corpus, rel)] = data_dir / corpus / rel
    if data.get("maestro_root"):
        root = Path(data["maestro_root"])
        for paths in list_maestro(root).values():
            out.update({document_name("maestro", p.relative_to(root)): p for p in paths})
    return out
