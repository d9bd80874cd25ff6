"""Config composition: the shipped config directory (``musicgen/conf``, package data), composing a
config outside ``@hydra.main`` as the command line does, and turning config groups into objects.

Versions and presets are ordinary Hydra config groups, composed in train.yaml's defaults list in
the order version, preset, preset-for-the-model-family, so a preset scales any version down and
the command line's values win over both. Users type ``+version=vN``; ``version_as_choice`` turns
it into the slot's choice (``version=vN``) before Hydra sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from musicgen.errors import ConfigError
from musicgen.generation import SamplingConfig
from musicgen.runtime import register_resolvers

#: The shipped configs (package data); Hydra mains find them as ``pkg://musicgen.conf``.
CONF_DIR = Path(__file__).resolve().parent / "conf"

TOP_LEVEL_KEYS = {
    "paths", "tokenizer", "model", "objective", "data", "trainer", "callbacks", "logger",
    "sampling", "preset", "hparams_search", "task_name", "seed", "version", "optim",
    "ckpt_path", "optimized_metric", "resume", "hydra", "conditioning", "infill",
}

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

def check_keys(cfg: DictConfig) -> None:
    """Fail on top-level keys nobody reads (a misspelt top-level key trains silently otherwise)."""
    unknown = set(cfg.keys()) - TOP_LEVEL_KEYS
    if unknown:
        raise ConfigError(f"unknown top-level config keys {sorted(unknown)}; known: {sorted(TOP_LEVEL_KEYS)}")

def build(what: str, cfg: Any, **kwargs: Any) -> Any:
    """``instantiate(cfg)``; a constructor's ``ValueError``/``TypeError`` (a setting it rejects)
    becomes a one-line ``ConfigError`` naming the config group."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, (TypeError, ValueError)):
            msg = str(e.__cause__)
            raise ConfigError(msg if msg.startswith(f"{what}.") else f"{what}: {msg}") from e
        raise

def sampling_config(sampling: Any) -> SamplingConfig:
    """The ``sampling`` group as a ``SamplingConfig``; a value out of range is a ``ConfigError``."""
    try:
        return SamplingConfig(**sampling)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"sampling: {e}") from e

def compose(
    config_name: str = "train", overrides: list[str] | tuple[str, ...] = (), conf_dir: Path | str = CONF_DIR
) -> DictConfig:
    """Compose a config outside ``@hydra.main`` (tests, notebooks), as the command line does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=version_as_choice(overrides))
    if config_name == "train":
        check_keys(cfg)
    return cfg
