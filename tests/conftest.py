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
