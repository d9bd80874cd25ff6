"""Checks run before anything trains (``preflight``): every setting that needs no data, all problems
reported together; and the DataModule arguments of conditioning and infilling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from musicgen.config import build, check_keys, sampling_config
from musicgen.data.sources import require_dir
from musicgen.errors import ConfigError, UserError
from musicgen.training.resume import resolve_ckpt_path


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
        if model_cfg.get("bar_position"):
            model_cfg["bar_grid"] = model_cfg.get("bar_grid") or 32  # so does the bar's grid
            if "use_time_signatures" not in cfg.tokenizer:
                raise ConfigError(f"model.bar_position=true needs a tokeniser with bars (tokenizer=remi or "
                                  f"remi_bpe); {cfg.tokenizer._target_.rsplit('.', 1)[-1]} has none")
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
    from musicgen.control.conditioning import attributes_of

    attrs = attributes_of(cond)
    if "use_time_signatures" not in cfg.tokenizer:
        raise ConfigError(f"conditioning={cond.get('name')} needs a REMI tokeniser (tokenizer=remi or remi_bpe)")
    if "metre" in attrs and not cfg.tokenizer.use_time_signatures:
        raise ConfigError("conditioning on metre needs real bars: add tokenizer.use_time_signatures=true")
    return {"conditioning": OmegaConf.to_container(cond, resolve=True)}

def infill_config(cfg: DictConfig) -> dict[str, Any]:
    """The DataModule's ``infill`` argument (``{}`` for infill=none or rate 0); infilling needs a
    REMI tokeniser (bars) and packed causal windows (the Transformer). With conditioning, the
    rearranged windows are the conditioned run's own training windows (``musicgen.data.fim``)."""
    infill = cfg.get("infill")
    if not infill or not infill.get("rate"):
        return {}
    from musicgen.control.infilling import check_config

    check_config(infill)
    if "use_time_signatures" not in cfg.tokenizer:
        raise ConfigError(f"infill={infill.get('name')} needs a REMI tokeniser (tokenizer=remi or remi_bpe): its bars")
    if cfg.data.get("mode") != "causal" or not cfg.data.get("pack", True):
        raise ConfigError(f"infill={infill.get('name')} needs packed causal windows (data.mode=causal, "
                          "data.pack=true: the Transformer versions V7, V8)")
    return {"infill": OmegaConf.to_container(infill, resolve=True)}

def resolve_bar_position(model_cfg: dict[str, Any], tokenizer: Any) -> tuple[Any, Any] | None:
    """With ``model.bar_position``: sets ``model_cfg["bar_grid"]`` (null: the tokeniser's positions
    per bar; a number must hold them) and returns the per-id tables for ``net.set_bar_tables``;
    None without the option."""
    if not model_cfg.get("bar_position"):
        return None
    from musicgen.tokenizers.bars import bar_position_tables

    count, sets, grid = bar_position_tables(tokenizer, model_cfg["vocab_size"])
    wanted = model_cfg.get("bar_grid")
    if wanted is not None and wanted < grid:
        raise ConfigError(f"model.bar_grid={wanted} is smaller than the tokeniser's {grid} positions per bar; "
                          "set model.bar_grid=null to take the tokeniser's")
    model_cfg["bar_grid"] = wanted or grid
    return count, sets


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
