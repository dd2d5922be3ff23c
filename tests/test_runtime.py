"""The local Ray instance the jobs start: its dashboard and job server stay on this machine
and ask for Ray's token, its processes run without Ray Train's preemption watcher, and they
and the driver allocate Arrow memory from the pool that hands it back (jemalloc)."""

import subprocess
import sys
from pathlib import Path

from conftest import assert_dashboard_locked

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os, sys
import ray
from biolord_ray.config import RayConfig
from biolord_ray.runtime import init_ray
print("DASHBOARD", init_ray(RayConfig(num_cpus=1)).dashboard_url, flush=True)
watcher = ray.remote(lambda: os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"))
print("WORKER_PREEMPTION_WATCHER", ray.get(watcher.remote()), flush=True)
import pyarrow as pa
pool = ray.remote(lambda: pa.default_memory_pool().backend_name)
print("ARROW_POOL", pa.default_memory_pool().backend_name, ray.get(pool.remote()), flush=True)
sys.stdin.read()  # hold the instance until the test has looked at it
"""


def test_local_instance_dashboard_is_loopback_only_and_needs_the_token():
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(Path.home())}
    job = subprocess.Popen([sys.executable, "-c", SCRIPT], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           cwd=ROOT, env=env)
    try:
        line = next(line for line in job.stdout if line.startswith("DASHBOARD"))
        host_port = line.split()[1]
        assert host_port.startswith("127.0.0.1:")
        assert_dashboard_locked(f"http://{host_port}")
        # A worker process (where Tune trials start their Ray Train runs) inherits the switch.
        line = next(line for line in job.stdout if line.startswith("WORKER_PREEMPTION"))
        assert line.split() == ["WORKER_PREEMPTION_WATCHER", "0"]
        line = next(line for line in job.stdout if line.startswith("ARROW_POOL"))
        assert line.split() == ["ARROW_POOL", "jemalloc", "jemalloc"]  # driver, worker
    finally:
        job.stdin.close()  # init_ray's instance ends with its process
        job.wait(timeout=120)
