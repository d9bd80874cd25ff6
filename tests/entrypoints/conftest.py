import pytest
from fixtures_smoke import prepared_data_dir, smoke_override_list  # noqa: F401  (fixtures)

from musicgen.config import compose
from musicgen.train import train


@pytest.fixture(scope="module")
def smoke_run(request, tmp_path_factory, prepared_data_dir):
    """A trained smoke run directory per version (parametrise indirectly with the version)."""
    version = getattr(request, "param", "v7")
    tmp = tmp_path_factory.mktemp(f"run_{version}")
    cfg = compose("train", [f"+version={version}", *smoke_override_list(tmp, prepared_data_dir)])
    train(cfg)
    return tmp / "run"
