"""The command line and the package as shipped: ``musicgen <verb>`` (the verb table,
``musicgen/__main__.py``) and its ``python -m musicgen.X`` twins, configs found through the package
(``pkg://musicgen.conf``) from any directory, and, slow, the built wheel installed into a fresh
venv training and sampling from an empty directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, cli_overrides, run_cli, smoke_override_list

from musicgen.__main__ import VERBS

#: The ``python -m musicgen.X`` shims: each runs the verb's ``main``.
SHIMS = ("train", "generate", "evaluate", "prepare", "export")

CFG_JOB = ["+version=v7", "preset=smoke", "--cfg", "job"]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _out(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"


# --- the verb table ---------------------------------------------------------------------------

def test_help_lists_every_verb():
    proc = run_cli("musicgen", ["--help"], timeout=120)
    assert proc.returncode == 0, _out(proc)
    assert proc.stdout.startswith("usage: musicgen <verb>")
    listed = {ln.split()[0] for ln in proc.stdout.splitlines() if ln.startswith("  ") and ln.strip()}
    assert listed == set(VERBS), _out(proc)


def test_unknown_verb_is_a_one_line_error():
    proc = run_cli("musicgen", ["nosuchverb"], timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert err.startswith("error: unknown verb 'nosuchverb'") and "\n" not in err, _out(proc)
    assert "train" in err  # it names the known verbs


def test_verb_and_shim_compose_the_same_config():
    """``musicgen train ...`` is the same Hydra app as ``python -m musicgen.train ...``."""
    verb = run_cli("musicgen", ["train", *CFG_JOB], timeout=180)
    shim = run_cli("musicgen.train", CFG_JOB, timeout=180)
    assert verb.returncode == 0, _out(verb)
    assert shim.returncode == 0, _out(shim)
    for text in ("n_layers:", "name: v7", "name: smoke"):
        assert text in verb.stdout, _out(verb)
    assert verb.stdout == shim.stdout


def test_every_verb_module_imports_and_has_main():
    for verb, (module, what) in VERBS.items():
        mod = importlib.import_module(module)
        assert callable(getattr(mod, "main", None)), f"{verb}: {module} has no main()"
        assert what, verb
    for shim in SHIMS:
        assert shim in VERBS
        assert importlib.import_module(f"musicgen.{shim}").main is importlib.import_module(VERBS[shim][0]).main


# --- configs found through the package --------------------------------------------------------

def _from_elsewhere(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    """``python -m musicgen *args`` run in ``cwd`` (not the checkout), the package importable from
    the checkout whether or not it is installed."""
    env = _env(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("MUSICGEN_ROOT", None)
    return subprocess.run([sys.executable, "-m", "musicgen", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_configs_are_found_from_another_directory(tmp_path):
    proc = _from_elsewhere(tmp_path, ["generate", "--help"])
    assert proc.returncode == 0, _out(proc)
    out = proc.stdout
    assert "== Config ==" in out and "ckpt_path: ???" in out and "num_samples:" in out, _out(proc)
    assert "sampling: conservative, creative, default, greedy" in out, _out(proc)
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_user_config_dir_adds_to_the_shipped_configs(tmp_path):
    """``--config-dir``: the user's own configs beside the shipped ones (here a sampling preset)."""
    user = tmp_path / "my_conf"
    (user / "sampling").mkdir(parents=True)
    (user / "sampling" / "mine.yaml").write_text("temperature: 0.42\ntop_k: 7\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = _from_elsewhere(work, ["generate", "--config-dir", str(user), "sampling=mine", "ckpt_path=x",
                                  "--cfg", "job"])
    assert proc.returncode == 0, _out(proc)
    assert "temperature: 0.42" in proc.stdout and "top_k: 7" in proc.stdout, _out(proc)
    assert "num_samples: 4" in proc.stdout  # generate.yaml, from the package


# --- the wheel --------------------------------------------------------------------------------

#: What a failed ``pip wheel --no-build-isolation`` says when the build backend is not installed.
NO_BACKEND = ("No module named 'setuptools'", "BackendUnavailable", "invalid command 'bdist_wheel'",
              "Cannot import 'setuptools.build_meta'")


def _run(cmd, *, cwd, env=None, timeout=300) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.perf_counter() - t0


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_trains_and_generates_from_an_empty_directory(tmp_path, prepared_data_dir):
    """Build the wheel, install it (``--no-deps``) into a fresh venv that borrows the repository
    venv's installed dependencies (torch ...), and run ``musicgen train +version=v7 preset=smoke``,
    then ``musicgen generate`` on its run, from an empty directory.

    The wheel is built from a copy of the sources (``musicgen/``, ``pyproject.toml``, README) so
    that setuptools writes no ``build/`` or ``*.egg-info`` into the checkout (and no stale
    ``build/lib`` leaks into the wheel), with ``--no-build-isolation``: nothing is downloaded, and
    the build backend (setuptools >= 68; one older than 70.1 also needs ``wheel``) must be in the
    venv running the tests; without it the test is skipped, saying so.

    The fresh venv sees the repository venv's site-packages through a path line in a ``.pth`` file:
    a path line does not run the ``.pth`` files of that folder, so the editable install's import
    hook stays out and ``import musicgen`` is the wheel's (checked). The wheel goes in before that
    ``.pth`` exists, so pip does not see the editable ``musicgen`` as already installed.
    About 40 s on 2 CPU cores (the training run is most of it).
    """
    timings: dict[str, float] = {}
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip(f"no build backend: setuptools is not installed in {sys.prefix} "
                    "(pip install 'setuptools>=68' there)")

    # the wheel
    src = tmp_path / "src"
    shutil.copytree(REPO / "musicgen", src / "musicgen", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    proc, timings["pip wheel"] = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                       "--disable-pip-version-check", "-q", "-w", wheels, src], cwd=tmp_path)
    if proc.returncode != 0 and any(s in proc.stdout + proc.stderr for s in NO_BACKEND):
        pytest.skip(f"the build backend is unavailable in {sys.prefix}: {_out(proc)[-600:]}")
    assert proc.returncode == 0, _out(proc)
    (wheel,) = wheels.glob("musicgen-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next((zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")), "")
    assert {"musicgen/conf/train.yaml", "musicgen/conf/version/v8.yaml", "musicgen/__main__.py"} <= names
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "musicgen" / "conf").rglob("*.yaml")}
    assert shipped <= names, f"configs missing from the wheel: {sorted(shipped - names)}"
    assert "musicgen = musicgen.__main__:main" in entry_points, entry_points

    # the fresh venv, the wheel installed, then the repository venv's packages made visible
    fresh = tmp_path / "venv"
    proc, timings["venv"] = _run([sys.executable, "-m", "venv", fresh], cwd=tmp_path)
    assert proc.returncode == 0, _out(proc)
    py, script = fresh / "bin" / "python", fresh / "bin" / "musicgen"
    env = _env(HYDRA_FULL_ERROR="1")
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MUSICGEN_ROOT", "MUSICGEN_DATA_DIR"):
        env.pop(var, None)
    proc, timings["pip install"] = _run([py, "-m", "pip", "install", "--no-deps", "--no-index",
                                         "--disable-pip-version-check", "-q", wheel], cwd=tmp_path, env=env)
    assert proc.returncode == 0, _out(proc)
    assert script.is_file()
    proc, _ = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path, env=env)
    fresh_site = Path(proc.stdout.strip())
    assert fresh_site.is_dir() and fresh_site.is_relative_to(fresh), _out(proc)
    repo_site = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (fresh_site / "_musicgen_test_deps.pth").write_text("".join(f"{p}\n" for p in repo_site))

    empty = tmp_path / "empty"
    empty.mkdir()
    proc, timings["import"] = _run(
        [py, "-c", "import json, musicgen, musicgen.runtime as r, torch; "
                   "print(json.dumps([musicgen.__file__, r.project_root()]))"], cwd=empty, env=env)
    assert proc.returncode == 0, _out(proc)
    where, root = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(where).is_relative_to(fresh_site), f"musicgen imported from {where}, not the wheel"
    assert not Path(where).resolve().is_relative_to(REPO.resolve())
    assert Path(root).resolve() == empty.resolve()  # data/ and outputs/ of an installed wheel: the cwd

    # train from the empty directory, the data and every output under tmp_path
    run = tmp_path / "run"
    overrides = cli_overrides(smoke_override_list(tmp_path, prepared_data_dir))
    proc, timings["train"] = _run([script, "train", "+version=v7", *overrides, f"hydra.run.dir={run}"],
                                  cwd=empty, env=env, timeout=600)
    assert proc.returncode == 0, _out(proc)
    assert list((run / "checkpoints").glob("*.ckpt")), f"no checkpoint in {run}/checkpoints\n{_out(proc)}"
    assert (run / ".hydra" / "config.yaml").is_file()

    # and sample from the run
    samples = tmp_path / "samples"
    proc, timings["generate"] = _run([script, "generate", f"ckpt_path={run}", "num_samples=1", "prompt.source=none",
                                      "max_new_tokens=16", f"output_dir={samples}"], cwd=empty, env=env)
    assert proc.returncode == 0, _out(proc)
    report = json.loads((samples / "generation.json").read_text())
    assert len(report["samples"]) == 1 and "midi" in report["samples"][0], report["samples"]
    assert sorted(p.name for p in empty.iterdir()) == [], "the run wrote into the working directory"
    print("wheel path timings (s):", {k: round(v, 1) for k, v in timings.items()})
