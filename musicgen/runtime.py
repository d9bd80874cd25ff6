"""Where and how a run executes: the device, the default precision, whether W&B runs offline, the
project root, and the OmegaConf resolvers the shipped configs use (``mg_root``, ``mg_precision``,
``mg_wandb_offline``: ``register_resolvers``, called by every entry point and by ``compose``)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from musicgen.errors import user_errors


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags (``/proc/cpuinfo``; empty where there is none)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = cpuinfo.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    return model, flags


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_does_bf16() -> bool:
    """Whether this CPU does bf16 matrix products fast (AVX-512 BF16 or AMX)."""
    flags = cpu_info()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_precision() -> str:
    """bf16 autocast where the hardware does bf16 fast (CUDA Ampere+, CPUs with AVX-512 BF16/AMX)."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_does_bf16() else "32-true"


def pick_device(name: str):
    """``auto``: CUDA when available, else the CPU; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def wandb_offline() -> bool:
    """Offline unless the user has configured W&B (so a run never blocks on the network)."""
    if os.environ.get("WANDB_MODE") in ("online", "run"):
        return False
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.exists() and "api.wandb.ai" in netrc.read_text())


def project_root() -> str:
    """``$MUSICGEN_ROOT``, else this checkout's root (an editable install: ``pyproject.toml`` beside the
    package), else the working directory (an installed wheel)."""
    if os.environ.get("MUSICGEN_ROOT"):
        return os.environ["MUSICGEN_ROOT"]
    checkout = Path(__file__).resolve().parents[1]
    return str(checkout) if (checkout / "pyproject.toml").is_file() else os.getcwd()


def register_resolvers() -> None:
    for name, fn in {
        "mg_root": project_root,
        "mg_precision": default_precision,
        "mg_wandb_offline": wandb_offline,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)

























def hydra_main(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """``@hydra.main`` over the shipped configs (``pkg://musicgen.conf``, so an installed wheel finds
    them from any directory; ``--config-dir`` adds the user's), with the resolvers registered
    before Hydra composes, and a ``UserError`` printed as one ``error: ...`` line."""

    def wrap(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        main = hydra.main(version_base="1.3", config_path="pkg://musicgen.conf", config_name=config_name)(
            user_errors(fn))

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            register_resolvers()
            return main(*args, **kwargs)

        return run

    return wrap
