import pytest
from fixtures_prepared import prepared_data_dir  # noqa: F401  (session fixture)

from musicgen.config import compose
from musicgen.train import train


@pytest.fixture(scope="module")
def smoke_run(request, tmp_path_factory, prepared_data_dir):
    """A trained smoke run directory per version (parametrise indirectly with the version)."""
    version = getattr(request, "param", "v7")
    tmp = tmp_path_factory.mktemp(f"run_{version}")
    cfg = compose("train", [
        f"+version={version}", "preset=smoke", f"paths.data_dir={prepared_data_dir}",
        f"paths.cache_dir={tmp}/cache", f"paths.output_dir={tmp}/run", "data.max_files=null",
        "data.val_frac=0.25", "callbacks.progress_bar=null",
    ])
    train(cfg)
    return tmp / "run"
