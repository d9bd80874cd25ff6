"""``musicgen export ckpt_path=<run dir or .ckpt> format=hf out=DIR``: a Hugging Face model directory
(``musicgen.checkpoint.hf``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from musicgen.checkpoint.hf import FORMATS, export_hf
from musicgen.errors import ConfigError
from musicgen.runtime import hydra_main


def export(cfg: DictConfig) -> Path:
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not supported; choose one of {list(FORMATS)}")
    return export_hf(cfg.ckpt_path, cfg.out, overwrite=bool(cfg.overwrite), check=bool(cfg.check),
                     tolerance=float(cfg.tolerance))


@hydra_main("export")
def main(cfg: DictConfig) -> None:
    out = export(cfg)
    print(f"exported: {out}")


if __name__ == "__main__":
    main()
