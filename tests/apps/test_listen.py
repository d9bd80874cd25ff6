"""The listening test on a smoke run: the study made once (pieces under opaque names, provenance
stored, reused on restart, a changed definition refused), served over HTTP to parallel listeners
(cookies, each answer once, nothing lost on restart), ranked by ``musicgen ratings``; and, where
Debian's Chromium is installed, a scripted browser listener through ten pairs."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import dpo_overrides, run_cli

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from musicgen.apps.listen import COOKIE, serve  # noqa: E402
from musicgen.apps.study import materialise  # noqa: E402
from musicgen.audio import find_soundfont, renderer_from_config  # noqa: E402
from musicgen.config import compose  # noqa: E402
from musicgen.data.preferences import PreferenceStore  # noqa: E402
from musicgen.errors import ConfigError, UserError  # noqa: E402
from musicgen.experiments.ratings import rate  # noqa: E402
from musicgen.training.fit import train  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PAIRS = 10
AUDIO_JS = """
const done = arguments[arguments.length - 1];
const a = document.getElementById(arguments[0]);
if (!a) { done('no player'); return; }
if (a.readyState >= 1) { done(a.duration); return; }
a.addEventListener('loadedmetadata', () => done(a.duration), {once: true});
a.addEventListener('error', () => done('error ' + (a.error && a.error.code)), {once: true});
a.load();
"""


def listen_cfg(run: Path, study_dir: Path, *extra: str):
    return compose("listen", [f"study.run={run}", f"study_dir={study_dir}", f"study.pairs={PAIRS}",
                              "server_port=0", "device=cpu", "study.max_new_tokens=96", *extra])


@pytest.fixture(scope="module")
def made_study(smoke_run, tmp_path_factory) -> Path:
    """The smoke study made once from the v7 smoke run (read-only: tests copy it)."""
    study_dir = tmp_path_factory.mktemp("study") / "smoke"
    cfg = listen_cfg(smoke_run, study_dir)
    materialise(cfg.study, study_dir, renderer_from_config(cfg.audio))
    return study_dir


@pytest.fixture
def study_dir(made_study, tmp_path) -> Path:
    shutil.copytree(made_study, tmp_path / "smoke")
    return tmp_path / "smoke"


class Server:
    """``musicgen listen`` in a thread of this process, on a free port."""

    def __init__(self, cfg):
        started = threading.Event()

        def on_start(url, server):
            self.url, self.server = url, server
            started.set()

        self.thread = threading.Thread(target=serve, args=(cfg, on_start), daemon=True)
        self.thread.start()
        assert started.wait(120), "the listening server did not start"
        for _ in range(200):  # until it answers
            try:
                httpx.get(self.url + "/files/none", timeout=5)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("the listening server does not answer")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def test_study_is_made_once_blind_and_with_provenance(smoke_run, made_study, study_dir):
    store = PreferenceStore(study_dir / "answers.sqlite")
    pieces = store.pieces()
    by = collections.Counter(p.contestant for p in pieces.values())
    assert set(by) == {"model", "real", "ngram"} and all(1 <= k <= 3 for k in by.values())
    assert len(store.pairs()) == PAIRS
    for p in pieces.values():
        assert (study_dir / p.midi).is_file() and (study_dir / p.png).is_file()
        assert re.fullmatch(r"pieces/[0-9a-f]{16}\.mid", p.midi)  # nothing of its source in its name
        assert p.provenance["run"] == str(smoke_run.resolve()) or Path(p.provenance["run"]) == smoke_run
    model = [p for p in pieces.values() if p.contestant == "model"]
    assert {len(p.provenance["ckpt_sha256"]) for p in model} == {64}
    assert all(p.provenance["sampling"]["temperature"] == 0.8 and p.provenance["seed"] == 0 for p in model)
    assert all("name" in p.provenance for p in pieces.values() if p.contestant == "real")
    # made once: the same definition reuses every file; another is refused
    before = {f: f.stat().st_mtime_ns for f in (study_dir / "pieces").iterdir()}
    cfg = listen_cfg(smoke_run, study_dir)
    materialise(cfg.study, study_dir, None)
    assert {f: f.stat().st_mtime_ns for f in (study_dir / "pieces").iterdir()} == before
    with pytest.raises(UserError, match="another definition"):
        materialise(listen_cfg(smoke_run, study_dir, "study.seed=1").study, study_dir, None)
    for bad, match in (("study.contestants.real.kind=bogus", "kind='bogus'"),
                       ("study.contestants.ngram.run=null", "ngram.run"), ("study.sampling.top_p=7", "sampling")):
        with pytest.raises(ConfigError, match=match):
            materialise(listen_cfg(smoke_run, study_dir, bad).study, study_dir.parent / "other", None)
    assert not (study_dir.parent / "other").exists()  # refused before any work


def _listener(url: str) -> list[str]:
    """A listener answering every pair (each answer sent twice), from a fresh cookie jar: what the
    pages showed of the pieces."""
    shown = []
    with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as c:
        while "Thank you" not in (page := c.get("/").text):
            form = dict(re.findall(r"name='(pair_id|left|right|shown)' value='([^']*)'", page))
            shown.append(page)
            for f in re.findall(r"src='(/files/[^']+)'", page):
                assert c.get(f).status_code == 200
            for _ in range(2):
                r = c.post("/answer", data={**form, "choice": "left", "rating_left": "4"})
                assert r.status_code == 200, r.text  # followed the redirect to the next pair
    return shown


def test_parallel_listeners_over_http_and_restart(smoke_run, study_dir):
    cfg = listen_cfg(smoke_run, study_dir)
    with Server(cfg) as srv:
        with ThreadPoolExecutor(4) as ex:
            pages = list(ex.map(_listener, [srv.url] * 4))
        assert [len(p) for p in pages] == [PAIRS] * 4
        for name in ("model", "real", "ngram", "smoke_run", "v7"):
            assert all(name not in p for ps in pages for p in ps), name  # blind
        assert httpx.get(srv.url + "/files/answers.sqlite").status_code == 404
        bad = httpx.post(srv.url + "/answer", data={"pair_id": "1", "choice": "left"})
        assert bad.status_code == 400 and bad.text.startswith("error:")
        with httpx.Client(base_url=srv.url) as c:
            c.get("/")
            cookie = c.cookies[COOKIE]
    rows = PreferenceStore(study_dir / "answers.sqlite").answers_table()
    assert len(rows) == 4 * PAIRS and len({r["listener"] for r in rows}) == 4
    assert collections.Counter((r["listener"], r["pair_id"]) for r in rows).most_common(1)[0][1] == 1
    assert all(r["rating_left"] == 4 and r["seconds"] >= 0 and r["app_version"] for r in rows)
    with Server(cfg) as srv:  # a restart: every answer kept, a finished listener stays finished
        listener = rows[0]["listener"]
        assert "Thank you" in httpx.get(srv.url + "/", cookies={COOKIE: listener}).text
        assert "pair 1 of" in httpx.get(srv.url + "/", cookies={COOKIE: cookie}).text
    assert len(PreferenceStore(study_dir / "answers.sqlite").answers_table()) == 4 * PAIRS
    result = rate(compose("ratings", [f"study_dir={study_dir}", "n_boot=50", "export=[csv]"]))
    assert result["answers"] == 4 * PAIRS and result["listeners"] == 4
    assert (study_dir / "ratings.md").is_file() and (study_dir / "ratings.png").is_file()
    assert len((study_dir / "answers.csv").read_text().splitlines()) == 4 * PAIRS + 1


def test_a_browser_listener_answers_ten_pairs(smoke_run, study_dir):
    sys.path.insert(0, str(REPO / "scripts"))
    pytest.importorskip("selenium")
    from gallery_check import find, headless_chromium

    if not (find("chromium", "chromium-browser") and find("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them when root)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with Server(listen_cfg(smoke_run, study_dir)) as srv:
        driver = headless_chromium(1200)
        try:
            picks = []
            driver.get(srv.url)
            if find_soundfont() is not None:  # the players' files load and have a length
                for side in ("a", "b"):
                    duration = driver.execute_async_script(AUDIO_JS, f"audio-{side}")
                    assert isinstance(duration, (int, float)) and duration > 0, duration
            for k in range(PAIRS):
                assert f"pair {k + 1} of {PAIRS}" in driver.find_element(By.ID, "progress").text
                for side in ("a", "b"):
                    assert driver.execute_script(f"return document.getElementById('roll-{side}').naturalWidth") > 0
                choice = ("prefer-a", "prefer-b", "prefer-none")[k % 3]
                driver.find_element(By.CSS_SELECTOR, f"input[name=rating_left][value='{1 + k % 5}']").click()
                picks.append(choice)
                button = driver.find_element(By.ID, choice)
                button.click()
                WebDriverWait(driver, 60).until(ec.staleness_of(button))  # the next page has come
            assert driver.find_element(By.ID, "done").text == "Thank you"
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, errors
        finally:
            driver.quit()
    rows = PreferenceStore(study_dir / "answers.sqlite").answers_table()
    assert len(rows) == PAIRS and len({r["listener"] for r in rows}) == 1
    want = {"prefer-a": "left", "prefer-b": "right", "prefer-none": "none"}
    assert [r["choice"] for r in rows] == [want[c] for c in picks]
    assert [r["rating_left"] for r in rows] == [1 + k % 5 for k in range(PAIRS)]
    result = rate(compose("ratings", [f"study_dir={study_dir}", "n_boot=50"]))
    assert result["answers"] == PAIRS
    assert (study_dir / "answers.parquet").is_file()


def test_the_verbs_serve_and_rank_a_study(smoke_run, study_dir, smoke_overrides, tmp_path):
    """``musicgen listen study=smoke`` serves the (already made) study; ``musicgen ratings`` ranks
    what a listener answered; a study with no answers file is a one-line error; and ``objective=dpo``
    fine-tunes the smoke run from those answers (``preferences=<the study's SQLite file>``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "musicgen", "listen", "study=smoke", f"study.run={smoke_run}",
                             f"study_dir={study_dir}", f"study.pairs={PAIRS}", "study.max_new_tokens=96",
                             "server_port=0", "device=cpu"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:  # until it says where it listens
            seen.append(line)
            if line.startswith("musicgen listen:"):
                url = line.split(" on ", 1)[1].split(" ", 1)[0]
                break
        else:
            raise AssertionError("musicgen listen did not start:\n" + "".join(seen[-30:]))
        for _ in range(200):
            try:
                answered = _listener(url)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert len(answered) == PAIRS
    finally:
        proc.terminate()
        proc.wait(30)
    out = run_cli("musicgen", ["ratings", "study=smoke", f"study_dir={study_dir}", "n_boot=50"], check=True)
    assert f"{PAIRS} answers from 1 listeners" in out.stdout
    assert {"model", "real", "ngram"} <= set(re.findall(r"^\| \d \| (\w+) \|", out.stdout, re.M))
    missing = run_cli("musicgen", ["ratings", f"study_dir={study_dir / 'nothing'}"])
    assert missing.returncode == 1 and missing.stderr.strip().startswith("error: no answers at"), missing.stderr

    db = study_dir / "answers.sqlite"
    train(compose("train", dpo_overrides(smoke_run, smoke_overrides, f"objective.module.preferences={db}")))
    run = tmp_path / "run"
    saved = json.loads((run / "preferences.json").read_text())
    assert saved["source"] == str(db) and len(saved["pairs"]) == PAIRS  # every answer a preference ("left")
    assert all(c != r for c, r in saved["pairs"])
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/dpo_margin", "train/dpo_accuracy", "val/loss"} <= set(header)
    assert (run / "checkpoints" / "last.ckpt").is_file()
