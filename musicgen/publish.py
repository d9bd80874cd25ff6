"""Result pages written by the commands that measure them: ``publish=true``.

``publish(name, markdown, files)`` writes ``docs/results/<name>.md`` and copies the figures the
page links into ``docs/results/<name>/``, rewriting its image links to those copies, so the docs
site shows what the command measured, never a number copied by hand. Under the page's title it
puts a header: the command that wrote it, the UTC date, the machine (CPU model, torch version) and
the git commit, and that the page is generated. It then rewrites the list of published pages in
``docs/results/index.md`` between ``<!-- results:start -->`` and ``<!-- results:end -->``.

A shared utility: standard library, ``musicgen.fs``, ``musicgen.runtime`` and ``musicgen.errors``
only, so any command may call it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_bytes, atomic_write_text
from musicgen.runtime import cpu_info, project_root

__all__ = ["INDEX_END", "INDEX_START", "command_line", "publish", "results_dir", "slug"]

INDEX_START = "<!-- results:start -->"
INDEX_END = "<!-- results:end -->"
#: A page name: a file name without its ``.md`` (letters, digits, ``.``, ``_``, ``-``).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: A Markdown image: ``![alt](target)`` or ``![alt](target "title")``.
IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")


def slug(*parts: str) -> str:
    """A page name from free text (a version, a run directory's name): ``evaluation-v7-run``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-.") or "page"


def command_line(argv: Sequence[str] | None = None) -> str:
    """This process's command line as the user typed it (default ``sys.argv``): ``musicgen <verb>
    ...`` under the verb table, ``python -m musicgen.<module> ...`` for a module run as a script."""
    argv = list(sys.argv if argv is None else argv) or ["python"]
    first = Path(argv[0])
    if argv[0].startswith("musicgen "):  # the verb table sets argv[0] to "musicgen <verb>"
        head = argv[0]
    elif first.suffix == ".py" and "musicgen" in first.parts:
        parts = first.with_suffix("").parts
        module = ".".join(parts[len(parts) - 1 - parts[::-1].index("musicgen"):])
        head = "python -m " + module.removesuffix(".__main__")
    elif first.name == "__main__.py":  # python -m <package>
        head = f"python -m {first.parent.name}"
    else:
        head = first.name
    return " ".join([head, *map(shell_quote, argv[1:])])


def shell_quote(arg: str) -> str:
    """``arg`` quoted for a POSIX shell as a person would write it: as it is when nothing needs
    quoting, in single quotes, or in double quotes when it holds single quotes and nothing a
    shell expands inside double quotes (Hydra's ``"title='...'"``); else ``shlex.quote``'s form."""
    quoted = shlex.quote(arg)
    if "'" in arg and not re.search(r'["$`\\!]', arg):
        return f'"{arg}"'
    return quoted


def snippet_section(name: str, lines: list[str]) -> list[str]:
    """``lines`` between snippet markers, so that another docs page can show them as the command
    wrote them (``--8<-- "docs/results/<page>.md:<name>"``, mkdocs.yml's snippets)."""
    return [f"<!-- --8<-- [start:{name}] -->", *lines, f"<!-- --8<-- [end:{name}] -->"]


def publish(name: str, markdown: str, files: Mapping[str, Path] | Sequence[Path] = (),
            docs_dir: Path | str | None = None, command: str | None = None) -> Path:
    """Write ``<docs_dir>/results/<name>.md`` (atomically) with its figures; return its path.

    ``files``: the figures the page links, as a mapping from the link written in ``markdown``
    (``metrics.png``) to the file, or a list of files linked by their names. Each figure the page
    shows is copied to ``results/<name>/`` and its link rewritten to the copy; an image link that is
    relative and has no file here is an error (the page would show a broken image). Figures of an
    earlier publish of the same page that this one no longer has are removed. ``docs_dir``: the
    docs tree (default: the checkout's ``docs/``; an installed package has none: pass one).
    ``command``: what wrote the page, for the header (default: ``command_line()``, this process's).
    """
    results = results_dir(docs_dir, name)
    figures = _figures(files)
    figure_dir = results / name
    copied: set[Path] = set()

    def relink(m: re.Match[str]) -> str:
        target = m.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:|[/#]", target):  # a URL, an absolute path or an anchor: as it is
            return m.group(0)
        if target not in figures:
            raise ValueError(f"the page {name!r} shows {target!r}, but no file was given for it")
        dest = figure_dir / target
        atomic_write_bytes(dest, figures[target].read_bytes())
        copied.add(dest)
        return f"{m.group(1)}{name}/{target}{m.group(3)}"

    body = IMAGE.sub(relink, markdown)
    _remove_stale(figure_dir, copied)
    page = results / f"{name}.md"
    atomic_write_text(page, _with_header(body, name, command))
    _update_index(results)
    return page


def results_dir(docs_dir: Path | str | None = None, name: str | None = None) -> Path:
    """``<docs_dir>/results``, or a one-line ``ConfigError`` where there is no docs directory (or
    ``name``, the page's, is not a plain name): a command that publishes calls it before its work,
    so a bad ``publish_dir`` or ``publish_name`` fails at once."""
    if name is not None and (not NAME.fullmatch(name) or name == "index"):
        raise ConfigError(f"page name {name!r}: use letters, digits, '.', '_' and '-' (and not 'index')")
    if docs_dir is None:
        docs_dir = Path(project_root()) / "docs"
        if not docs_dir.is_dir():
            raise ConfigError(f"no docs directory at {docs_dir} (an installed package has none); "
                              "pass publish_dir=<your docs directory>")
    docs_dir = Path(docs_dir)
    if not docs_dir.is_dir():
        raise ConfigError(f"publish_dir={docs_dir} is not a directory; pass the docs directory (the one with results/)")
    return docs_dir / "results"


def _figures(files: Mapping[str, Path] | Sequence[Path]) -> dict[str, Path]:
    """Link as written in the page -> the file; every link a plain relative path (no ``..``)."""
    pairs = files.items() if isinstance(files, Mapping) else ((Path(f).name, f) for f in files)
    out = {}
    for link, path in pairs:
        parts = PurePosixPath(link).parts
        if not parts or PurePosixPath(link).is_absolute() or ".." in parts:
            raise ValueError(f"figure link {link!r}: a relative path inside the page's folder, please")
        if not Path(path).is_file():
            raise FileNotFoundError(f"figure {path} (linked as {link!r}) does not exist")
        out[link] = Path(path)
    return out


def _remove_stale(figure_dir: Path, keep: set[Path]) -> None:
    """Remove the files of an earlier publish this one did not write (then empty folders)."""
    if not figure_dir.is_dir():
        return
    for path in sorted(figure_dir.rglob("*"), reverse=True):  # files before the folders holding them
        if path.is_file() and path not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if not any(figure_dir.iterdir()):
        figure_dir.rmdir()


def _with_header(markdown: str, name: str, command: str | None) -> str:
    """The page with the header under its title (a title from ``name`` where it has none)."""
    lines = markdown.lstrip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        title, rest = lines[0], lines[1:]
    else:
        title, rest = f"# {name}", lines
    command = command or command_line()
    model = cpu_info()[0] or platform.processor() or platform.machine() or "unknown CPU"
    header = [
        title,
        "",
        "<!-- generated by musicgen.publish: do not edit by hand; rerun the command named below -->",
        "",
        f"> Written by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d} (UTC), on "
        f"{model}, torch {_torch_version()}, commit {git_commit()}. Generated: do not edit this page by hand; "
        "rerun the command to update it.",
    ]
    return "\n".join([*header, *rest]).rstrip("\n") + "\n"


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    """``git rev-parse --short HEAD`` in the project root, else ``unknown`` (no git, no checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project_root(), capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def page_title(page: Path) -> str:
    """The text of a page's first ``# `` heading (its file name where it has none)."""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return page.stem


def _update_index(results: Path) -> None:
    """List every page under ``results/`` (but the index) between the markers of ``index.md``,
    sorted by name, one line each; the markers are added at the end where the index has none."""
    index = results / "index.md"
    pages = sorted(p for p in results.glob("*.md") if p.name != "index.md")
    listing = [f"- [{page_title(p).replace('[', '(').replace(']', ')')}]({p.name})" for p in pages]
    block = "\n".join([INDEX_START, *listing, INDEX_END])
    text = index.read_text(encoding="utf-8") if index.is_file() else "# Results\n"
    start, end = text.find(INDEX_START), text.find(INDEX_END)
    if start >= 0 and end > start:
        text = text[:start] + block + text[end + len(INDEX_END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(index, text)
