"""Config helpers: OmegaConf resolvers, composition outside ``@hydra.main``, and checks run
before anything trains.

Versions and presets are ordinary Hydra config groups, composed in train.yaml's defaults list in
the order version, preset, preset-for-the-model-family, so a preset scales any version down and
the command line's values win over both. Users type ``+version=vN``; ``version_as_choice`` turns
it into the slot's choice (``version=vN``) before Hydra sees it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from musicgen.checkpoint import resolve_ckpt_path
from musicgen.data.sources import require_dir
from musicgen.errors import ConfigError, UserError
from musicgen.generation import SamplingConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

TOP_LEVEL_KEYS = {
    "paths", "tokenizer", "model", "objective", "data", "trainer", "callbacks", "logger",
    "sampling", "preset", "hparams_search", "task_name", "seed", "version", "optim",
    "ckpt_path", "optimized_metric", "resume", "hydra", "conditioning", "infill",
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
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    flags = cpu_info()[1]
    return "bf16-mixed" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "32-true"


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


@dataclass
class Checked:
    """What ``preflight`` built while checking: the run's tokeniser and DataModule (untrained,
    no data read yet) and the checkpoint to resume from, if any."""

    ckpt_path: str | None
    tokenizer: Any
    datamodule: Any


def preflight(cfg: DictConfig) -> Checked:
    """Every check that needs no data, so mistakes fail in seconds rather than after data
    preparation; all problems found are reported together in one ``ConfigError``."""
    problems: list[str] = []

    def check(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except UserError as e:  # a setting to change: noted, and the other checks still run
            problems.append(str(e))
            return None

    check(lambda: check_keys(cfg))
    ckpt_path = check(lambda: resolve_ckpt_path(cfg))
    check(lambda: sampling_config(cfg.sampling))

    def model() -> None:
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        model_cfg["vocab_size"] = model_cfg.get("vocab_size") or 512  # the real one comes from the tokeniser
        with torch.device("meta"):  # shapes only: no memory, no time
            build("model", model_cfg)

    check(model)
    for key, example, what in (
        ("root", "/path/to/your/midi", "a folder of .mid/.midi files"),
        ("maestro_root", "/path/to/maestro-v3.0.0", "the unpacked MAESTRO v3 folder"),
    ):
        if cfg.data.get(key) is not None:
            check(lambda key=key, example=example, what=what: require_dir(cfg.data[key], f"data.{key}", example, what))
    tokenizer = check(lambda: build("tokenizer", cfg.tokenizer))
    conditioning = check(lambda: conditioning_config(cfg))
    infill = check(lambda: infill_config(cfg))
    datamodule = check(lambda: build("data", cfg.data, tokenizer=tokenizer, **conditioning, **infill)) \
        if tokenizer is not None and conditioning is not None and infill is not None else None
    if problems:
        raise ConfigError("; ".join(problems))
    return Checked(ckpt_path, tokenizer, datamodule)


def conditioning_config(cfg: DictConfig) -> dict[str, Any]:
    """The DataModule's ``conditioning`` argument (``{}`` for conditioning=none, so an unconditioned
    run builds exactly what it did before); attributes other than the key need a REMI tokeniser,
    and metre needs its time-signature tokens."""
    cond = cfg.get("conditioning")
    if not cond or not cond.get("attributes"):
        return {}
    from musicgen.conditioning import attributes_of

    attrs = attributes_of(cond)
    if "use_time_signatures" not in cfg.tokenizer:
        raise ConfigError(f"conditioning={cond.get('name')} needs a REMI tokeniser (tokenizer=remi or remi_bpe)")
    if "metre" in attrs and not cfg.tokenizer.use_time_signatures:
        raise ConfigError("conditioning on metre needs real bars: add tokenizer.use_time_signatures=true")
    return {"conditioning": OmegaConf.to_container(cond, resolve=True)}


def infill_config(cfg: DictConfig) -> dict[str, Any]:
    """The DataModule's ``infill`` argument (``{}`` for infill=none or rate 0); infilling needs a
    REMI tokeniser (bars) and packed causal windows (the Transformer). With conditioning, the
    rearranged windows are the conditioned run's own training windows (``musicgen.infill``)."""
    infill = cfg.get("infill")
    if not infill or not infill.get("rate"):
        return {}
    from musicgen.infill import check_config

    check_config(infill)
    if "use_time_signatures" not in cfg.tokenizer:
        raise ConfigError(f"infill={infill.get('name')} needs a REMI tokeniser (tokenizer=remi or remi_bpe): its bars")
    if cfg.data.get("mode") != "causal" or not cfg.data.get("pack", True):
        raise ConfigError(f"infill={infill.get('name')} needs packed causal windows (data.mode=causal, "
                          "data.pack=true: the Transformer versions V7, V8)")
    return {"infill": OmegaConf.to_container(infill, resolve=True)}


def sampling_config(sampling: Any) -> SamplingConfig:
    """The ``sampling`` group as a ``SamplingConfig``; a value out of range is a ``ConfigError``."""
    try:
        return SamplingConfig(**sampling)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"sampling: {e}") from e


def resolve_vocab(cfg: DictConfig, tokenizer_vocab: int) -> int:
    """The model's vocabulary: the tokeniser's, or a configured number that must agree with it."""
    wanted = cfg.model.get("vocab_size")
    if wanted is not None and wanted < tokenizer_vocab and (conditioning_config(cfg) or infill_config(cfg)):
        return tokenizer_vocab  # a pinned size (V6: 362) is the tokeniser's own; attribute tokens come on top
    if wanted is not None and wanted != tokenizer_vocab:
        raise ConfigError(
            f"model.vocab_size={wanted} disagrees with the tokeniser's vocabulary of {tokenizer_vocab}; "
            "set model.vocab_size=null to take the tokeniser's size"
        )
    return tokenizer_vocab


def compose(
    config_name: str = "train", overrides: list[str] | tuple[str, ...] = (), conf_dir: Path | str = CONF_DIR
) -> DictConfig:
    """Compose a config outside ``@hydra.main`` (tests, notebooks), as the command line does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=version_as_choice(overrides))
    if config_name == "train":
        check_keys(cfg)
    return cfg
