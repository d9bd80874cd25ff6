"""Config helpers: OmegaConf resolvers, composition outside ``@hydra.main``, and checks run
before anything trains.

Versions and presets are ordinary Hydra config groups, composed in train.yaml's defaults list in
the order version, preset, preset-for-the-model-family, so a preset scales any version down and
the command line's values win over both. Users type ``+version=vN``; ``version_as_choice`` turns
it into the slot's choice (``version=vN``) before Hydra sees it.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

TOP_LEVEL_KEYS = {
    "paths", "tokenizer", "model", "objective", "data", "trainer", "callbacks", "logger",
    "sampling", "preset", "hparams_search", "task_name", "seed", "version", "optim",
    "ckpt_path", "optimized_metric", "resume", "hydra",
}


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags (``/proc/cpuinfo``; empty where there is none)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = cpuinfo.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    return model, flags


def default_precision() -> str:
    """bf16 autocast where the hardware does bf16 fast (CUDA Ampere+, CPUs with AVX-512 BF16/AMX)."""
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    flags = cpu_info()[1]
    return "bf16-mixed" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "32-true"


def pick_device(name: str):
    """``auto``: CUDA when available, else the CPU; any other name as given."""
    import torch

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
    """``$MUSICGEN_ROOT``, else this checkout's root (where ``conf/`` lives), else the working directory."""
    if os.environ.get("MUSICGEN_ROOT"):
        return os.environ["MUSICGEN_ROOT"]
    checkout = Path(__file__).resolve().parents[1]
    return str(checkout) if (checkout / "conf" / "train.yaml").exists() else os.getcwd()


def register_resolvers() -> None:
    for name, fn in {
        "mg_root": project_root,
        "mg_precision": default_precision,
        "mg_wandb_offline": wandb_offline,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def version_as_choice(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """``+version=vN`` -> ``version=vN``: what users type selects the ``version`` slot of
    train.yaml's defaults list (``+`` would append a second one, which Hydra refuses)."""
    return [o[1:] if o.startswith("+version=") else o for o in overrides]


def value_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, object]]:
    """``(key, value)`` of the command line's value overrides (not group choices, not hydra.*)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.key_or_group
        if o.is_delete() or key.startswith("hydra") or (CONF_DIR / key).is_dir() or o.is_sweep_override():
            continue
        out.append((key, o.value()))
    return out


def check_config(cfg: DictConfig) -> None:
    """Fail before training on keys nobody reads (a misspelt top-level key trains silently otherwise)."""
    unknown = set(cfg.keys()) - TOP_LEVEL_KEYS
    if unknown:
        raise ValueError(f"unknown top-level config keys {sorted(unknown)}; known: {sorted(TOP_LEVEL_KEYS)}")


def compose(config_name: str = "train", overrides: list[str] | tuple[str, ...] = (), conf_dir: Path | str = CONF_DIR) -> DictConfig:
    """Compose a config outside ``@hydra.main`` (tests, notebooks), as the command line does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=version_as_choice(overrides))
    if config_name == "train":
        check_config(cfg)
    return cfg
