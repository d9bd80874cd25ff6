"""Provenance: the sha256 of a run's tokeniser file, of its split (which files are in train / val /
test) and of its resolved config, stored in every checkpoint; a resume or a generation whose
tokeniser or split differs is refused with a message naming what differs (``ProvenanceError``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from musicgen.data.cache import is_transposed_copy
from musicgen.errors import ProvenanceError


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

def split_file_lists(cache_meta: dict[str, Any]) -> dict[str, list[str]]:
    """The files of each split of a token cache (originals only: transposed copies follow from
    the augmentation settings, which are part of the config)."""
    return {
        split: sorted(name for name in info["names"] if not is_transposed_copy(name))
        for split, info in sorted(cache_meta["splits"].items())
    }

def provenance(tokenizer_text: str, cache_meta: dict[str, Any], config_yaml: str) -> dict[str, Any]:
    files = split_file_lists(cache_meta)
    return {
        "tokenizer_sha256": sha256_text(tokenizer_text),
        "split_sha256": sha256_text(json.dumps(files, sort_keys=True)),
        "config_sha256": sha256_text(config_yaml),
        "split": files,
    }

def check_provenance(saved: dict[str, Any], current: dict[str, Any], ckpt_path: Path | str, action: str) -> None:
    """Raise ``ProvenanceError`` if ``current`` has another tokeniser or split than ``saved``."""
    problems = []
    if saved.get("tokenizer_sha256") != current["tokenizer_sha256"]:
        problems.append(
            f"the tokeniser differs (sha256 {str(saved.get('tokenizer_sha256'))[:12]} in the checkpoint, "
            f"{current['tokenizer_sha256'][:12]} now): same tokenizer.* settings and training files are needed"
        )
    if saved.get("split_sha256") != current["split_sha256"]:
        problems.append(f"the data split differs: {describe_split_change(saved.get('split', {}), current['split'])}")
    if problems:
        raise ProvenanceError(f"cannot {action} {ckpt_path}: " + "; ".join(problems))

def describe_split_change(before: dict[str, list[str]], after: dict[str, list[str]]) -> str:
    """E.g. ``train: 2 files missing (folk/a.mid, ...), val: 1 file added (folk/b.mid)``."""
    parts = []
    for s in sorted(set(before) | set(after)):
        old, new = set(before.get(s, [])), set(after.get(s, []))
        for what, names in (("missing", old - new), ("added", new - old)):
            if names:
                shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
                parts.append(f"{s}: {len(names)} file{'s' if len(names) > 1 else ''} {what} ({shown})")
    return ", ".join(parts) or "same files, other order"
