"""Shared fixtures for training runs: a prepared data directory (as `musicgen.prepare` lays it out) built from the real test tunes, and smoke-run overrides."""

import json
import shutil

import pytest


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory, folk_midi_files, chorale_midi_files):
    """A ``paths.data_dir`` laid out like ``musicgen.prepare``'s output, from the real test tunes."""
    root = tmp_path_factory.mktemp("prepared")
    for name, files in (("folk", folk_midi_files), ("chorales", chorale_midi_files)):
        (root / name).mkdir()
        rels = []
        for i, f in enumerate(files):
            rel = f"{i:03d}_{f.name}"
            shutil.copy(f, root / name / rel)
            rels.append(rel)
        (root / name / "manifest.json").write_text(json.dumps({"files": rels, "failed": []}))
    return root


def smoke_override_list(tmp, data_dir) -> list[str]:
    """Overrides for a seconds-long training run on the prepared test tunes, writing under ``tmp``."""
    return [
        "preset=smoke",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={tmp}/cache",
        f"paths.output_dir={tmp}/run",
        f"paths.log_dir={tmp}/outputs",
        "data.max_files=null",
        "data.val_frac=0.25",
        "callbacks.progress_bar=null",
    ]


@pytest.fixture
def smoke_overrides(tmp_path, prepared_data_dir):
    return smoke_override_list(tmp_path, prepared_data_dir)
