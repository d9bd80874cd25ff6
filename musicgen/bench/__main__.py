"""``python -m musicgen.bench``: the Hydra entry point (conf/bench.yaml). Importing the package
first sets what must precede torch (``musicgen.bench.env``)."""

import hydra
from omegaconf import DictConfig

from musicgen.bench import run


@hydra.main(config_path="../../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
