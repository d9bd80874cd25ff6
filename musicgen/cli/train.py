"""``musicgen train`` / ``python -m musicgen.train +version=v7 [preset=cpu] [key=value ...]``: ``train(cfg)``
(``musicgen.training.fit``), and a ``UserError`` is one ``error: ...`` line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from musicgen.config import version_as_choice
from musicgen.runtime import hydra_main
from musicgen.training.fit import train
from musicgen.training.resume import TrainingInterrupted, resume_command

log = logging.getLogger(__name__)


@hydra_main("train")
def run(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().overrides.task
    try:
        metrics = train(cfg)
    except FloatingPointError as e:
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        kept = f"; the last good checkpoint is {last}" if last.is_file() else ""
        raise SystemExit(f"error: {e}{kept}") from e
    except TrainingInterrupted as e:
        log.warning("%s. Continue with:\n  %s", e, resume_command(overrides, cfg.paths.output_dir))
        raise SystemExit(128 + e.signum) from e
    return metrics.get(cfg.optimized_metric.replace("/", "_"))

def main() -> None:
    sys.argv[1:] = version_as_choice(sys.argv[1:])
    run()


if __name__ == "__main__":
    main()
