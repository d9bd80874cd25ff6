"""scripts/reader_ceiling.py: the control readers' agreement with the labels on real tunes, printed
and published into a docs tree through ``musicgen.publish``."""

import subprocess
import sys

from helpers import REPO


def test_the_reader_ceiling_is_counted_on_real_tunes_and_published(real_midi_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "reader_ceiling.py"), str(real_midi_dir / "folk"),
                          "--every", "1", "--offset", "0", "--publish", "--publish-dir", str(tmp_path / "docs")],
                         capture_output=True, text=True, check=True).stdout
    n = len(list((real_midi_dir / "folk").rglob("*.mid")))
    rows = [line for line in out.splitlines() if line.startswith("| key_of") or line.startswith("| metre")]
    assert len(rows) == 3 and all(f"/ {n} |" in r for r in rows[:2])  # every tune read for its key
    page = (tmp_path / "docs" / "results" / "reader-ceiling.md").read_text()
    assert all(r in page for r in rows) and "scripts/reader_ceiling.py" in page  # the header names the command
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "reader_ceiling.py"), "--publish", "--publish-dir",
                          str(tmp_path / "none")], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
