"""Open the gallery in headless Chromium, as a person would, and check it: ``make gallery-check``.

The page loads from ``file://`` without console errors, every ``<img>`` decoded (naturalWidth > 0)
and every ``<audio>`` loads its metadata (duration > 0) and starts playing; then a screenshot.
Uses Debian's ``chromium`` and ``chromium-driver`` (the make target installs them when root) with
selenium, given the driver's path so that Selenium Manager never tries to download one.

    python scripts/gallery_check.py [--page outputs/gallery/index.html] [--screenshot docs/gallery.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

MEDIA_JS = """
const done = arguments[arguments.length - 1];
const audios = Array.from(document.querySelectorAll('audio'));
const one = (a) => new Promise((resolve) => {
  const finish = (ok, why) => resolve({src: a.currentSrc || a.querySelector('source')?.src, ok, why,
                                       duration: a.duration});
  const play = () => {
    if (!(a.duration > 0)) { finish(false, 'duration ' + a.duration); return; }
    a.muted = true;
    a.play().then(() => { a.pause(); finish(true, 'played'); }, (e) => finish(false, 'play(): ' + e));
  };
  if (a.readyState >= 1) { play(); return; }
  a.addEventListener('loadedmetadata', play, {once: true});
  a.addEventListener('error', () => finish(false, 'error ' + (a.error && a.error.code)), {once: true});
  a.querySelector('source')?.addEventListener('error', () => finish(false, 'source error'), {once: true});
  a.load();
});
Promise.all(audios.map(one)).then(done);
"""


def find(*names: str) -> str | None:
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def headless_chromium(width: int):
    """A selenium driver of Debian's headless Chromium (console messages logged, audio muted and
    allowed to play), or None with one line on stderr when chromium or chromium-driver is missing.
    Shared with ``scripts/app_check.py``."""
    browser, driver_path = find("chromium", "chromium-browser"), find("chromedriver")
    if not browser or not driver_path:
        print("error: needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
              file=sys.stderr)
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
                 "--autoplay-policy=no-user-gesture-required", f"--window-size={width},1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page", default="outputs/gallery/index.html")
    ap.add_argument("--screenshot", default="docs/gallery.png")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--max-height", type=int, default=2200)
    args = ap.parse_args()

    page = Path(args.page).resolve()
    if not page.is_file():
        print(f"error: {args.page} does not exist: run make gallery first", file=sys.stderr)
        return 1
    driver = headless_chromium(args.width)
    if driver is None:
        return 1
    problems: list[str] = []
    try:
        driver.set_script_timeout(120)
        driver.get(page.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
        for src, complete, width in images:
            if not complete or not width:
                problems.append(f"image not decoded: {src}")
        audios = driver.execute_async_script(MEDIA_JS)
        for a in audios:
            if not a["ok"]:
                problems.append(f"audio cannot play: {a['src']} ({a['why']})")
        errors = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        problems += [f"console: {entry['message']}" for entry in errors]
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(args.width, min(max(height, 600), args.max_height))
        Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.screenshot)
        durations = [round(a["duration"], 1) for a in audios if a["ok"]]
        print(f"{page}: {len(images)} images, {len(audios)} audio players (durations {durations} s), "
              f"{len(errors)} console errors; screenshot {args.screenshot}")
    finally:
        driver.quit()
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if not images:
        print("FAIL the page has no images", file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
