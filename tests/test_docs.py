"""The documentation site builds with --strict, and the README stays a front door."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "make test" in text  # CI runs the README's test command
    assert "musicgen.load(" in text


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()


def test_every_included_section_exists():
    """A note that shows a generated page's table (``--8<-- "docs/results/<page>.md:<section>"``)
    names a page and a section the command writes: a missing section would render as nothing."""
    includes = [(page, m) for page in (ROOT / "docs").rglob("*.md")
                for m in re.finditer(r'^--8<-- "([^":]+)(?::([^"]+))?"$', page.read_text(encoding="utf-8"), re.M)]
    assert includes  # the performance note shows the ablation's tables
    for page, m in includes:
        target = ROOT / m.group(1)
        assert target.is_file(), f"{page}: {m.group(1)} is missing"
        if m.group(2):
            text = target.read_text(encoding="utf-8")
            assert f"--8<-- [start:{m.group(2)}]" in text and f"--8<-- [end:{m.group(2)}]" in text, \
                f"{page}: {m.group(1)} has no section {m.group(2)}"
