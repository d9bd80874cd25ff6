from fixtures_smoke import prepared_data_dir, smoke_overrides  # noqa: F401  (shared fixtures)
