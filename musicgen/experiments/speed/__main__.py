"""``musicgen bench``: the Hydra entry point (conf/bench.yaml). Importing the package
first sets what must precede torch (``musicgen.experiments.speed.env``)."""

from omegaconf import DictConfig

from musicgen.experiments.speed import run
from musicgen.runtime import hydra_main


@hydra_main("bench")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
