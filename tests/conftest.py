import copy
import dataclasses
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from biolord_ray.config import config_hash

# Tests never reach a model hub: the packaged models must load offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# The models tests prepare go to a cache of their own, never the user's. Not a fresh one per
# session: assembling all-mpnet-base-v2 takes ~10 s and converting SmolLM2 50 to 100 s on 2
# cores, so the folder is kept between sessions (and shared by checkouts) and each model is
# built once per machine. Outside the repository, so Ray's working_dir never uploads it.
# Ray workers and `ray start` nodes the tests launch inherit the variable.
TEST_MODEL_CACHE = Path(tempfile.gettempdir()) / f"biolord_ray-test-models-{os.getuid()}"
os.environ["BIOLORD_RAY_MODEL_CACHE"] = str(TEST_MODEL_CACHE)


def _link_models_the_setup_prepared() -> None:
    """The set-up command prepares the packaged models in the user's cache: the tests read
    them through links instead of building them again (a minute on a fresh CI machine), and
    never write there (an outdated one is rebuilt in place of its link, not through it)."""
    from biolord_ray.models import DEFAULT_CACHE_DIR
    from biolord_ray.models.packaged import MARKER_FILE

    TEST_MODEL_CACHE.mkdir(exist_ok=True)
    for marker in Path(DEFAULT_CACHE_DIR).expanduser().glob(f"*/{MARKER_FILE}"):
        link = TEST_MODEL_CACHE / marker.parent.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(marker.parent, target_is_directory=True)


_link_models_the_setup_prepared()

# Configs that session fixtures share between tests: (fixture, config, a copy as made).
_SHARED_CONFIGS: list[tuple[str, object, object]] = []


def _share(fixture: str, cfg):
    _SHARED_CONFIGS.append((fixture, cfg, copy.deepcopy(cfg)))
    return cfg


@pytest.fixture(autouse=True)
def shared_configs_stay_unchanged(request):
    """Fail the test after which a session fixture's config has changed: a change made in
    place leaks into every later test (and makes results depend on the tests' order). The
    config is put back, so that only the culprit fails."""
    yield
    for fixture, cfg, made in _SHARED_CONFIGS:
        if config_hash(cfg) != config_hash(made):
            for f in dataclasses.fields(made):
                setattr(cfg, f.name, copy.deepcopy(getattr(made, f.name)))
            pytest.fail(f"{request.node.nodeid} (or a fixture it uses) changed the config of "
                        f"the session fixture {fixture!r} in place; copy.deepcopy it first",
                        pytrace=False)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session (starting one costs ~5 s)."""
    import ray
    import ray.data

    from biolord_ray.config import RayConfig
    from biolord_ray.runtime import (
        configure_ray_data,
        prepare_local_instance,
        small_node_system_config,
    )

    if not ray.is_initialized():
        prepare_local_instance()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _system_config=small_node_system_config(RayConfig()))
    configure_ray_data(progress_bars=False)
    yield ray


@pytest.fixture(scope="session")
def hpo_run(ray_local, tmp_path_factory):
    """A run directory holding ingest_kg of the bundled HPO's first 400 concepts (real data).
    Its config is shared by the session: copy.deepcopy it before changing it."""
    from biolord_ray.config import load_config
    from biolord_ray.kg import ingest
    from biolord_ray.run_dir import RunDir

    path = tmp_path_factory.mktemp("hpo_run")
    cfg = load_config(None, ["kg.format=hpo", "kg.max_concepts=400", "kg.shuffle_partitions=2",
                             f"run_dir={path}"])
    record = ingest.run(cfg, RunDir(cfg.run_dir))
    return _share("hpo_run", cfg), RunDir(cfg.run_dir), record


class NodeMetrics:
    """The local node's Prometheus endpoint: what the dashboard's metrics view and
    Prometheus/Grafana read (Ray exports every few seconds)."""

    def __init__(self, ray):
        self.port = ray.nodes()[0]["MetricsExportPort"]

    def lines(self, prefix: str) -> list[str]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics").read().decode()
        return [line for line in text.splitlines() if line.startswith(prefix)]

    def wait_for(self, prefix: str, found, timeout: float = 60) -> list[str]:
        """Lines starting with ``prefix``, polled until ``found(lines)`` is true."""
        deadline, lines = time.time() + timeout, []
        while time.time() < deadline:
            lines = self.lines(prefix)
            if found(lines):
                return lines
            time.sleep(1)
        raise AssertionError(f"{prefix} metrics not exported; found {lines}")

    @contextmanager
    def recording(self, prefix: str):
        """Every line starting with ``prefix`` seen while the block runs (a finished worker's
        gauges leave the endpoint with it)."""
        seen, stop = [], threading.Event()

        def poll():
            while not stop.is_set():
                seen.extend(self.lines(prefix))
                stop.wait(1)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield seen
        finally:
            stop.set()
            thread.join()


@pytest.fixture(scope="session")
def node_metrics(ray_local):
    return NodeMetrics(ray_local)


def assert_dashboard_locked(url: str) -> None:
    """Ray's security defaults on a dashboard/job server at ``url`` (http://127.0.0.1:PORT):
    nothing answers on the machine's other addresses, and the API refuses a request without
    the cluster's token."""
    import psutil

    port = int(url.rsplit(":", 1)[1])
    outside = [a.address for addresses in psutil.net_if_addrs().values() for a in addresses
               if a.family == socket.AF_INET and not a.address.startswith("127.")]
    for address in outside:
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=3).close()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/api/jobs/", timeout=30)
    assert refused.value.code == 401


def readable_rows(folder) -> int:
    """Rows in the Parquet files of ``folder`` that can be read (a kill may cut one short)."""
    import pyarrow.parquet as pq

    rows = 0
    for path in Path(folder).glob("*.parquet"):
        try:
            rows += pq.read_metadata(path).num_rows
        except Exception:  # noqa: BLE001 - a file cut short by the kill
            pass
    return rows
