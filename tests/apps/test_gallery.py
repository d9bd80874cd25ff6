"""musicgen.gallery on a tiny trained run: one self-contained page (every referenced file inside the
site, relative paths, no http(s) URL, no script), samples generated for a run that has none, real
pieces beside them, runs side by side, and what it says without a SoundFont or samples."""

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from musicgen import audio
from musicgen.apps.gallery import build_gallery
from musicgen.audio import find_soundfont
from musicgen.config import compose
from musicgen.errors import ConfigError


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def all(self, tag):
        return [a for t, a in self.tags if t == tag]


def parse(index: Path) -> tuple[str, Page]:
    text = index.read_text()
    page = Page()
    page.feed(text)
    return text, page


def check_self_contained(site: Path, text: str, page: Page) -> list[str]:
    """Every src/href is a relative path to a file inside the site; returns them."""
    assert "http://" not in text and "https://" not in text
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    refs = [a[k] for _, a in page.tags for k in ("src", "href") if k in a]
    for ref in refs:
        assert "://" not in ref and not ref.startswith(("/", "data:")), ref
        path = (site / ref).resolve()
        assert path.is_file() and site.resolve() in path.parents, ref
    return refs


@pytest.fixture
def run_copy(smoke_run, tmp_path):
    """A copy of the session's smoke run (the gallery writes samples and real pieces into a run)."""
    def make(name):
        return Path(shutil.copytree(smoke_run, tmp_path / "runs" / name))
    return make


def gallery_cfg(runs, site, *extra):
    return compose("gallery", [f"runs=[{','.join(map(str, runs))}]", f"output_dir={site}", "samples_per_run=2",
                               "max_new_tokens=24", "real_pieces=1", *extra])


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_gallery_of_a_run_without_samples_is_one_self_contained_page(run_copy, tmp_path):
    run = run_copy("v7_tiny")
    assert not (run / "samples" / "gallery").exists()
    site = tmp_path / "site"
    result = build_gallery(gallery_cfg([run], site))
    assert result["index"] == str(site / "index.html")
    gen = json.loads((run / "samples" / "gallery" / "generation.json").read_text())  # generated for the page
    decoded = [s for s in gen["samples"] if "midi" in s]
    text, page = parse(site / "index.html")
    refs = check_self_contained(site, text, page)
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text
    real = json.loads((run / "real" / "real.json").read_text())["pieces"]
    assert len(page.all("img")) == len(decoded) + len(real) >= 2  # piano rolls: samples and real pieces
    midis = [a["href"] for a in page.all("a") if "download" in a]
    assert len(midis) == len(decoded) + len(real) and all(m.endswith(".mid") for m in midis)
    assert all(r.startswith("assets/") for r in refs)
    assert "v7_tiny" in text and "real test pieces" in text and "prompt: the first" in text
    sources = page.all("source")
    if find_soundfont() is None:
        assert not sources and "apt-get install fluid-soundfont-gm" in text
    else:
        assert len(page.all("audio")) == len(sources) == len(decoded) + len(real)
        assert all(s["src"].endswith(".flac") and s["type"] == "audio/flac" for s in sources)
    assert not list(tmp_path.glob(".site.*"))  # built beside it, then moved into place whole


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_runs_side_by_side_without_soundfont_or_samples(run_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "SEARCH_DIRS", (str(tmp_path / "no-soundfonts"),))
    monkeypatch.setattr(audio, "_warned", set())
    a, b = run_copy("a"), run_copy("b")
    site = tmp_path / "site"
    build_gallery(gallery_cfg([a, b], site, "generate_missing=false", "real_pieces=0"))
    text, page = parse(site / "index.html")
    check_self_contained(site, text, page)
    assert len([s for s in page.all("section") if s.get("class") == "run"]) == 2
    assert text.count("no samples: run python -m musicgen.generate") == 2
    assert "no General MIDI SoundFont found" in text and not page.all("audio")
    # a rebuild replaces the site whole: nothing of the old one is left
    (site / "stale.txt").write_text("old")
    build_gallery(gallery_cfg([a], site, "generate_missing=false", "real_pieces=0"))
    assert not (site / "stale.txt").exists()


def test_a_run_that_does_not_exist_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such run directory"):
        build_gallery(gallery_cfg([tmp_path / "nope"], tmp_path / "site"))


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_an_evaluated_run_shows_the_tonal_figures_first(run_copy, tmp_path):
    """A run with an ``evaluation.json`` shows its headline figures, the transposition-fair tonal
    ones before the key distribution (absolute pitch-class overlap, relabelled)."""
    from musicgen.config import compose as compose_cfg
    from musicgen.evaluation.run import evaluate

    run = run_copy("v7_eval")
    evaluate(compose_cfg("evaluate", [f"ckpt_path={run}", "split=train", "num_samples=3", "max_new_tokens=24",
                                      "bootstrap=50", "reference_pieces=5", "real_examples=1", "device=cpu"]))
    build_gallery(gallery_cfg([run], tmp_path / "site", "generate_missing=false"))
    text, _ = parse(tmp_path / "site" / "index.html")
    tonic, scale, key = (text.index(s) for s in ("tonic-relative pitch-class overlap", "scale consistency",
                                                 "key distribution (pitch-class overlap)"))
    assert tonic < scale < key
