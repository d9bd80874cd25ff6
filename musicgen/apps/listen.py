"""The blind listening test: ``musicgen listen study=<name>``.

Makes the study once (``musicgen.apps.study.materialise``: every contestant's pieces, the pairs),
then serves one plain page (FastAPI, no script): two pieces side by side, A and B, each a piano
roll and an audio player, never the source's name; the listener picks one or "no preference" and
may rate each 1-5. A listener is an anonymous id in a cookie (set on the first visit); each
answer goes into the study's SQLite store (``musicgen.data.preferences``) with the order shown,
the seconds since the page was served and the app's version, and the next pair follows until
the listener has heard every pair. Answers sent twice are kept once; many listeners may answer
at once. ``musicgen ratings study=<name>`` ranks the contestants from the same file.
"""

import html
import json
import logging
import secrets
import socket
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from musicgen.apps.study import materialise
from musicgen.audio import renderer_from_config
from musicgen.data.preferences import PreferenceStore
from musicgen.errors import UserError
from musicgen.runtime import hydra_main, pick_device

log = logging.getLogger(__name__)

COOKIE = "musicgen_listener"
MIME = {".png": "image/png", ".flac": "audio/flac", ".ogg": "audio/ogg", ".wav": "audio/wav"}
STYLE = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:1em auto;padding:0 1em}
.pair{display:flex;gap:1.5em}.side{flex:1;border:1px solid #ccc;border-radius:8px;padding:1em}
.side img{width:100%}.side audio{width:100%}.choices button{font-size:1.1em;margin:0.5em;padding:0.5em 1.5em}
.choices{text-align:center;margin-top:1em}"""


def page(body: str, title: str = "listening test") -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>")


def side(label: str, piece, ratings: bool) -> str:
    """One piece of the pair, known by its letter only."""
    key = label.lower()
    audio = (f"<audio id='audio-{key}' controls preload='metadata' src='/files/{piece.audio.split('/')[-1]}'></audio>"
             if piece.audio else "<p>(no audio: no SoundFont on the server; the piano roll only)</p>")
    rate = ""
    if ratings:
        opts = "".join(f"<label><input type='radio' name='rating_{'left' if key == 'a' else 'right'}' value='{v}'>{v}"
                       "</label> " for v in range(1, 6))
        rate = f"<p>rating (optional, 1 poor to 5 excellent): {opts}</p>"
    return (f"<div class='side' id='side-{key}'><h2>{label}</h2>{audio}"
            f"<img id='roll-{key}' alt='piano roll of {label}' src='/files/{piece.png.split('/')[-1]}'>{rate}</div>")


class Listening:
    """The page's logic over one study's store and folder, separate from the web framework."""

    def __init__(self, store: PreferenceStore, study_dir: Path, title: str, ratings: bool = True):
        self.store, self.study_dir, self.title, self.ratings = store, Path(study_dir), title, ratings
        self.pieces = store.pieces()
        self.files = {Path(f).name for p in self.pieces.values() for f in (p.png, p.audio) if f}
        self.n_pairs = len(store.pairs())
        from musicgen import __version__

        self.version = __version__

    def pair_page(self, listener: str) -> str:
        nxt = self.store.next_pair(listener)
        done = self.store.answered(listener)
        if nxt is None:
            return page(f"<h1 id='done'>Thank you</h1><p>You have heard all {self.n_pairs} pairs of this study.</p>",
                        self.title)
        pair_id, left, right = nxt
        hidden = "".join(f"<input type='hidden' name='{k}' value='{html.escape(str(v))}'>" for k, v in
                         {"pair_id": pair_id, "left": left, "right": right, "shown": f"{time.time():.3f}"}.items())
        buttons = ("<button type='submit' name='choice' value='left' id='prefer-a'>A is better</button>"
                   "<button type='submit' name='choice' value='none' id='prefer-none'>no preference</button>"
                   "<button type='submit' name='choice' value='right' id='prefer-b'>B is better</button>")
        body = (f"<h1>Which do you prefer?</h1><p id='progress'>pair {done + 1} of {self.n_pairs}. Listen to both, "
                "then choose.</p><form method='post' action='/answer' id='answer'>"
                f"{hidden}<div class='pair'>{side('A', self.pieces[left], self.ratings)}"
                f"{side('B', self.pieces[right], self.ratings)}</div><div class='choices'>{buttons}</div></form>")
        return page(body, self.title)

    def answer(self, listener: str, form: dict[str, str]) -> bool:
        """Record the form's answer; False when it was a repeat. A malformed form is a ``UserError``."""
        def rating(key: str) -> int | None:
            return int(form[key]) if form.get(key) else None

        try:
            pair_id, shown = int(form["pair_id"]), float(form["shown"])
            left, right, choice = form["left"], form["right"], form["choice"]
            r_left, r_right = rating("rating_left"), rating("rating_right")
        except (KeyError, ValueError) as e:
            raise UserError(f"malformed answer: {e}") from e
        return self.store.record(listener, pair_id, left, right, choice, r_left, r_right,
                                 max(0.0, time.time() - shown), self.version)


def build_app(listening: Listening):
    """The FastAPI app: ``/`` (the next pair; sets the listener cookie), ``/answer`` (POST), ``/files/<name>``.
    (This module has no ``from __future__ import annotations``: FastAPI reads the handlers' annotations,
    ``Request`` among them, which is imported here only.)"""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def with_cookie(resp, listener: str, new: bool):
        if new:
            resp.set_cookie(COOKIE, listener, max_age=365 * 24 * 3600, httponly=True, samesite="lax")
        return resp

    def listener_of(request: Request) -> tuple[str, bool]:
        known = request.cookies.get(COOKIE, "")
        return (known, False) if known.isalnum() and len(known) <= 64 else (secrets.token_hex(16), True)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        listener, new = listener_of(request)
        return with_cookie(HTMLResponse(listening.pair_page(listener)), listener, new)

    @app.post("/answer")
    async def answer(request: Request):
        listener, new = listener_of(request)
        form = {k: v[-1] for k, v in urllib.parse.parse_qs((await request.body()).decode()).items()}
        try:
            listening.answer(listener, form)
        except UserError as e:
            return PlainTextResponse(f"error: {e}", status_code=400)
        return with_cookie(RedirectResponse("/", status_code=303), listener, new)

    @app.get("/files/{name}")
    def files(name: str):
        if name not in listening.files:  # only the study's own pieces, by their opaque names
            return PlainTextResponse("not found", status_code=404)
        path = listening.study_dir / "pieces" / name
        return FileResponse(path, media_type=MIME.get(path.suffix, "application/octet-stream"))

    return app


def serve(cfg: DictConfig, on_start: Callable[[str, Any], None] | None = None) -> None:
    """Make the study (once), then serve it until stopped; ``on_start(url, server)`` once it listens
    (tests stop it with ``server.should_exit = True``)."""
    import uvicorn

    study_dir = Path(cfg.study_dir)
    store = materialise(cfg.study, study_dir, renderer_from_config(cfg.audio), str(pick_device(cfg.device)))
    listening = Listening(store, study_dir, f"listening test: {cfg.study.name}", cfg.ratings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.server_name, int(cfg.server_port or 0)))
    except OSError as e:
        raise UserError(f"server_port={cfg.server_port}: {e} (server_port=0 takes any free port)") from e
    url = f"http://{cfg.server_name}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(build_app(listening), log_level="warning", access_log=False))
    print(f"musicgen listen: study {cfg.study.name} ({listening.n_pairs} pairs) on {url} "
          f"(answers in {store.path})", flush=True)
    if on_start is not None:
        on_start(url, server)
    server.run(sockets=[sock])


@hydra_main("listen")
def main(cfg: DictConfig) -> None:
    log.info("listen settings: %s", json.dumps(OmegaConf.to_container(cfg, resolve=True), default=str))
    serve(cfg)


if __name__ == "__main__":
    main()
