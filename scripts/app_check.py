"""Open the app in headless Chromium, as a person would, and generate once: ``make app-check``.

Starts ``python -m musicgen.app`` on a free port of 127.0.0.1 (outputs in a temporary folder),
loads the page, presses Generate and waits for the result: the status line reports the notes,
the piano roll is decoded (naturalWidth > 0), the MIDI file is offered for download and, where a
SoundFont is found, the audio player's file loads and plays (duration > 0); no console errors.
Then a screenshot of the whole page, and the server is stopped. Uses Debian's ``chromium`` and
``chromium-driver`` with selenium, given the driver's path so that Selenium Manager never tries to
download one.

    python scripts/app_check.py [--run outputs/demo/v7] [--screenshot docs/app.png] [-- hydra overrides]
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="outputs/demo/v7", help="run directory or .ckpt (make demo writes the default)")
    ap.add_argument("--screenshot", default="docs/app.png")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--max-height", type=int, default=2200)
    ap.add_argument("--timeout", type=float, default=180, help="seconds for the app to start and to generate")
    ap.add_argument("overrides", nargs="*", help="hydra overrides for musicgen.app (after --)")
    args = ap.parse_args()

    driver = headless_chromium(args.width)  # before the app starts: a missing browser costs nothing
    if driver is None:
        return 1
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from musicgen.audio import find_soundfont

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
