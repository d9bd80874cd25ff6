import pytest
from fixtures_prepared import prepared_data_dir  # noqa: F401  (session fixture)


@pytest.fixture
def smoke_overrides(tmp_path, prepared_data_dir):
    return [
        "preset=smoke",
        f"paths.data_dir={prepared_data_dir}",
        f"paths.cache_dir={tmp_path}/cache",
        f"paths.output_dir={tmp_path}/run",
        f"paths.log_dir={tmp_path}/outputs",
        "data.max_files=null",
        "data.val_frac=0.25",
        "callbacks.progress_bar=null",
    ]
