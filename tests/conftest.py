import os

import pytest

# Tests never reach a model hub: the packaged models must load offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session (starting one costs ~5 s)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray


@pytest.fixture(scope="session")
def hpo_run(ray_local, tmp_path_factory):
    """A run directory holding ingest_kg of the bundled HPO's first 400 concepts (real data)."""
    from biolord_ray.config import load_config
    from biolord_ray.kg import ingest
    from biolord_ray.run_dir import RunDir

    path = tmp_path_factory.mktemp("hpo_run")
    cfg = load_config(None, ["kg.format=hpo", "kg.max_concepts=400", "kg.shuffle_partitions=2",
                             f"run_dir={path}"])
    record = ingest.run(cfg, RunDir(cfg.run_dir))
    return cfg, RunDir(cfg.run_dir), record
