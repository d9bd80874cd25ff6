"""Open the app in headless Chromium, as a person would, and generate: ``make app-check``.

Starts ``musicgen app`` on a free port of 127.0.0.1 (outputs in a temporary folder), loads the
page, presses Generate and waits for the result: the status line reports the notes, the piano
roll is decoded (naturalWidth > 0), the MIDI file is offered for download and, where a SoundFont
is found, the audio player's file loads and plays (duration > 0); no console errors. The page
must show the controls the run can use and no others (``Studio.controls``: a guidance slider and
one choice per attribute for a conditioned run, the infilling task for an infilling run). For a
conditioned run it then asks each attribute for its first value and generates again (the report
must record them); for an infilling run it switches to "regenerate bars of the uploaded file"
(the prompt choice hides, the bars box shows), uploads ``--upload`` (default: the sample just
generated) and regenerates its bars. Then a screenshot of the whole page, and the server is
stopped. Uses Debian's ``chromium`` and ``chromium-driver`` with selenium, given the driver's
path so that Selenium Manager never tries to download one.

    python scripts/app_check.py [--run outputs/demo/v7] [--screenshot docs/app.png] [--upload song.mid]
                                [-- hydra overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gallery_check import headless_chromium  # scripts/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]

AUDIO_JS = """
const done = arguments[arguments.length - 1];
const link = document.querySelector('#audio a[download]');
if (!link) { done({ok: false, why: 'no audio download link'}); return; }
const a = new Audio(link.href);  // the player draws a waveform (wavesurfer); this is the same file, played
const finish = (ok, why) => done({ok, why, duration: a.duration, src: link.href});
a.muted = true;
a.addEventListener('loadedmetadata', () => {
  if (!(a.duration > 0)) { finish(false, 'duration ' + a.duration); return; }
  a.play().then(() => { a.pause(); finish(true, 'played'); }, (e) => finish(false, 'play(): ' + e));
}, {once: true});
a.addEventListener('error', () => finish(false, 'error ' + (a.error && a.error.code)), {once: true});
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(run: str, out_dir: str, overrides: list[str], timeout: float) -> tuple[subprocess.Popen, str]:
    """The app as a subprocess, and its URL once it listens."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "musicgen", "app", f"ckpt_path={run}", f"server_port={port}", f"output_dir={out_dir}",
         *overrides],
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ln = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(ln)
        if ln.startswith("musicgen app for"):
            return proc, ln.split(" on ", 1)[1].split(" ", 1)[0]
    proc.kill()
    raise RuntimeError("the app did not start:\n" + "".join(seen[-30:]))


def shown(driver, elem_id: str) -> bool:
    """Whether the page shows the element (Gradio leaves a hidden component out of the page)."""
    return driver.execute_script(f"const e = document.getElementById('{elem_id}'); "
                                 "return !!e && e.offsetParent !== null;")


def newest_report(out_dir: str, name: str) -> dict:
    """The newest ``name`` (generation.json, infill.json) the app wrote under ``out_dir``."""
    paths = sorted(Path(out_dir).rglob(name), key=lambda p: p.stat().st_mtime)
    return json.loads(paths[-1].read_text()) if paths else {}


def check_controls(driver, attributes: tuple[str, ...], infill: bool) -> list[str]:
    """Problems with the controls shown for a run conditioned on ``attributes`` (none: not
    conditioned), trained with ``infill`` or not: those it can use, and no others."""
    problems = []
    labels = driver.execute_script("return Array.from(document.querySelectorAll('[data-testid=block-info]'))"
                                   ".map(e => e.textContent.trim());")
    if ("guidance (cfg_scale)" in labels) != bool(attributes):
        problems.append(f"guidance control {'missing' if attributes else 'shown'} for a run "
                        f"{'conditioned on ' + ', '.join(attributes) if attributes else 'without conditioning'}")
    for attr in attributes:
        if not shown(driver, f"attr-{attr}"):
            problems.append(f"no control for the attribute {attr}")
    if shown(driver, "task") != infill:
        problems.append(f"the infilling task is {'missing' if infill else 'shown'}")
    return problems


def pick_first_value(driver, attr: str) -> str:
    """Choose the first value (after "(any)") of an attribute's dropdown; returns its label."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, f"attr-{attr}").find_element(By.TAG_NAME, "input")
    box.click()
    options = driver.find_element(By.ID, box.get_attribute("aria-controls"))
    option = options.find_element(By.CSS_SELECTOR, "li[data-index='1']")
    label = option.get_attribute("aria-label")
    option.click()
    return label


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="outputs/demo/v7", help="run directory or .ckpt (make demo writes the default)")
    ap.add_argument("--screenshot", default="docs/app.png")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--max-height", type=int, default=2200)
    ap.add_argument("--timeout", type=float, default=180, help="seconds for the app to start and to generate")
    ap.add_argument("--upload", help="MIDI file whose bars an infilling run regenerates (default: its first sample)")
    ap.add_argument("overrides", nargs="*", help="hydra overrides for musicgen app (after --)")
    args = ap.parse_args()

    driver = headless_chromium(args.width)  # before the app starts: a missing browser costs nothing
    if driver is None:
        return 1
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    import musicgen
    from musicgen.audio import find_soundfont

    model = musicgen.load(args.run)  # what the page must offer: the run's attributes and infilling
    attributes = model.conditioning.attributes if model.conditioning is not None else ()
    infill = model.infill_vocab is not None
    del model

    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="musicgen_app_") as out_dir:
        proc = None
        try:
            proc, url = start_app(args.run, out_dir, args.overrides, args.timeout)
            driver.set_script_timeout(60)
            driver.get(url)
            wait = WebDriverWait(driver, args.timeout)
            button = wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Generate']")))
            t0 = time.perf_counter()
            button.click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "status"), " notes, "))
            seconds = time.perf_counter() - t0
            status = driver.find_element(By.ID, "status").text
            wait.until(lambda d: d.execute_script(
                "const i = document.querySelector('#roll img'); return i && i.complete && i.naturalWidth > 0;"))
            links = driver.execute_script(
                "return Array.from(document.querySelectorAll('#midi a')).map(a => a.href);")
            if not any(h.split("?")[0].endswith(".mid") for h in links):
                problems.append(f"no MIDI download link ({links})")
            audio = None
            if find_soundfont() is not None:
                wait.until(lambda d: d.execute_script("return !!document.querySelector('#audio a[download]');"))
                audio = driver.execute_async_script(AUDIO_JS)
                if not audio["ok"]:
                    problems.append(f"audio cannot play: {audio.get('src')} ({audio['why']})")
            problems += check_controls(driver, attributes, infill)
            if attributes:  # ask each attribute for its first value: the report records them
                asked = {a: pick_first_value(driver, a) for a in attributes}
                button.click()
                wait.until(ec.text_to_be_present_in_element((By.ID, "status"), f"asked {attributes[0]} "))
                got = newest_report(out_dir, "generation.json").get("conditioning", {}).get("attributes", {})
                if [got.get(a, "").replace("_", " ") for a in attributes] != list(asked.values()):
                    problems.append(f"asked {asked} on the page, the report has {got}")
                print(f"conditioned on {asked}: {driver.find_element(By.ID, 'status').text!r}")
            if infill:  # regenerate bars of an uploaded file
                driver.find_element(By.CSS_SELECTOR, "#task input[value='infill']").click()
                wait.until(lambda d: shown(d, "bars") and not shown(d, "prompt"))
                tune = args.upload or min(Path(out_dir).rglob("sample.mid"))
                driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(Path(tune).resolve()))
                wait.until(lambda d: d.execute_script("return !!document.querySelector('#upload a[download]');"))
                button.click()
                try:
                    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "regenerated"))
                    print(f"infilled {Path(tune).name}: {driver.find_element(By.ID, 'status').text!r}")
                except TimeoutException:
                    toasts = driver.execute_script("return Array.from(document.querySelectorAll('.toast-body'))"
                                                   ".map(t => t.textContent.trim());")
                    problems.append(f"infilling {tune} gave no result ({toasts})")
            time.sleep(1)  # the progress overlay fades out
            errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            problems += [f"console: {e['message']}" for e in errors]
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(args.width, min(max(height, 800), args.max_height))
            driver.execute_script("window.scrollTo(0, 0);")  # the click scrolled to the button
            time.sleep(0.5)
            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.screenshot)
            played = f"audio {audio['duration']:.1f} s" if audio and audio["ok"] else "no audio"
            print(f"{url}: generated in {seconds:.1f} s: {status!r}; {played}; {len(errors)} console errors; "
                  f"screenshot {args.screenshot}")
        finally:
            driver.quit()
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
