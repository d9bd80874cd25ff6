"""Config helpers: OmegaConf resolvers, compute presets, and checks run before anything trains.

A preset (``preset=smoke|cpu``) scales any version down. Hydra appends ``+version=`` after
every default, so a preset in the defaults list could never override a version's values;
instead ``apply_preset`` merges the preset after composition, explicitly: ``preset.all`` onto
the whole config, then ``preset.by_model.<model class>`` for the chosen model family, and then
the command line's own ``key=value`` overrides again, so what the user typed always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

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


def model_family(cfg: DictConfig) -> str:
    return str(cfg.model._target_).rsplit(".", 1)[-1]


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


def apply_preset(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Merge the chosen preset onto ``cfg`` (in place), then re-apply the user's ``overrides``.

    Unknown keys in a preset fail loudly.
    """
    preset = cfg.get("preset")
    if not preset or preset.get("name", "none") == "none":
        return cfg
    parts = [preset.get("all")]
    by_model = preset.get("by_model") or {}
    parts.append(by_model.get(model_family(cfg)))
    was_struct = OmegaConf.is_struct(cfg)
    OmegaConf.set_struct(cfg, True)
    try:
        for part in parts:
            if part is not None:
                cfg.merge_with(part)
        for key, value in value_overrides(overrides):
            OmegaConf.update(cfg, key, value, force_add=True)
    finally:
        OmegaConf.set_struct(cfg, was_struct)
    with open_dict(cfg):
        cfg.preset = OmegaConf.create({"name": preset.name})
    return cfg


def check_config(cfg: DictConfig) -> None:
    """Fail before training on keys nobody reads (a misspelt top-level key trains silently otherwise)."""
    unknown = set(cfg.keys()) - TOP_LEVEL_KEYS
    if unknown:
        raise ValueError(f"unknown top-level config keys {sorted(unknown)}; known: {sorted(TOP_LEVEL_KEYS)}")


def compose(config_name: str = "train", overrides: list[str] | tuple[str, ...] = (), conf_dir: Path | str = CONF_DIR) -> DictConfig:
    """Compose a config outside ``@hydra.main`` (tests, notebooks), preset applied, as the CLI does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides))
    if config_name == "train":
        apply_preset(cfg, overrides)
        check_config(cfg)
    return cfg
