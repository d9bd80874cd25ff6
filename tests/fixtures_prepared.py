"""A prepared data directory (as `musicgen.prepare` lays it out) built from the real test tunes."""

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
