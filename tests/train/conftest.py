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


@pytest.fixture
def smoke_overrides(tmp_path, prepared_data_dir):
    return [
        "preset=smoke",
        f"paths.data_dir={prepared_data_dir}",
        f"paths.cache_dir={tmp_path}/cache",
        f"paths.output_dir={tmp_path}/run",
        f"paths.log_dir={tmp_path}/outputs",
        "data.max_files=null",
        "data.val_frac=0.25",
        "callbacks.progress_bar=null",
    ]
