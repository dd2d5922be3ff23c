"""Connecting to Ray: a local instance for the embedded default, or an existing cluster."""

from __future__ import annotations

import logging
import os

from biolord_ray.config import RayConfig

log = logging.getLogger(__name__)

# Ray keeps at most one idle worker process per CPU and kills the rest after a second. Ray
# Data runs shuffle map and reduce tasks and join reduce tasks each in a worker pool of their
# own (different env vars), so on a 2-CPU node every join or group-by started fresh Python
# processes: about 6 s per shuffle, whatever its size. Idle workers kept for minutes (and a
# few more of them: ``ray.idle_worker_seconds``, ``ray.max_idle_workers``) make every shuffle
# after the first cost a fraction of a second (benchmarks/stage_fixed_cost.py). Nodes of a
# small cluster get the same from ``small_node_env()`` in the environment of ``ray start``.
def small_node_system_config(cfg: RayConfig) -> dict[str, int]:
    return {"idle_worker_killing_time_threshold_ms": round(cfg.idle_worker_seconds * 1000),
            "num_workers_soft_limit": cfg.max_idle_workers}


# A local instance is one machine, which no autoscaler drains: Ray Train's preemption watcher
# (an actor per training run and per Tune trial, polling for node drains) would only cost a
# process start each time. Clusters keep it. Set before ``ray.init``, so that every Ray process
# of the instance (a Tune trial, which starts its own Train runs, included) inherits it.
LOCAL_INSTANCE_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


# Arrow's allocator for every Ray process of the pipeline. Ray Data's workers are kept
# between tasks (above) and each kept the memory its largest task grew to: with Arrow's
# default mimalloc pool, 350 to 1,000 MiB per idle worker at 1M UMLS concepts, most of the
# growth of peak memory with the KG. With Arrow's jemalloc pool, which gives freed pages back
# to the OS, peaks at 1M concepts fell from 3.9-5.7 GB to 2.5-3.8 GB per stage, at the
# same speed (benchmarks/umls_scale.py, README "Scale"). Arrow only: torch and vLLM keep
# their allocators. Clusters get it from cluster/runtime_env.yaml's env_vars.
WORKER_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}


def small_node_env(cfg: RayConfig | None = None) -> dict[str, str]:
    """``small_node_system_config`` as the RAY_* environment variables Ray reads it from."""
    return {f"RAY_{key}": str(value)
            for key, value in small_node_system_config(cfg or RayConfig()).items()}


def init_ray(cfg: RayConfig):
    """Join the cluster named by the config or RAY_ADDRESS, else start a local instance.

    ``ray job submit`` sets RAY_ADDRESS for the driver, so the same job runs unchanged on a
    laptop and on a cluster. Returns ``ray.init``'s context (None if Ray was already up).
    """
    import ray
    import ray.data

    if ray.is_initialized():
        return None
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address)
    else:
        prepare_local_instance()
        context = ray.init(num_cpus=cfg.num_cpus, include_dashboard=True,
                           dashboard_host=cfg.dashboard_host,
                           _system_config=small_node_system_config(cfg))
    configure_ray_data()
    log.info("Ray resources: %s; dashboard: %s", ray.cluster_resources(),
             context.dashboard_url)
    return context


def prepare_local_instance() -> None:
    """What a local instance's processes inherit from this one (``LOCAL_INSTANCE_ENV``,
    ``WORKER_ENV``), and this process's own Arrow pool; call before ``ray.init``."""
    for key, value in {**LOCAL_INSTANCE_ENV, **WORKER_ENV}.items():
        os.environ.setdefault(key, value)
    use_arrow_pool_of_workers()


def use_arrow_pool_of_workers() -> None:
    """This process (the driver) allocates Arrow memory as the workers do (``WORKER_ENV``);
    Arrow read the variable when it first allocated, perhaps before it was set."""
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its default
        log.info("pyarrow has no jemalloc pool; Arrow keeps %s",
                 pa.default_memory_pool().backend_name)


def configure_ray_data(progress_bars: bool = True) -> None:
    """Ray Data's settings for datasets built in this process: the driver, and a Tune trial
    (a process of its own that reads the trial's data). Tasks and actors a dataset starts
    inherit them."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress_bars
    # Ray 2.60's default Parquet reader (datasource V2) lists the files of every read through
    # a pool of up to 32 FooterReader actors, each a process to start: 1 to 3 s of fixed cost
    # per read on a small node, and the stages read Parquet dozens of times. Measured on a
    # 120- and a 176-row output (a count and a take): 2.2 to 3.1 s with V2, 0.23 to 1.4 s with
    # V1, same rows; the data stages' fixed costs fell from 3.5-9.2 s to 0.7-2.5 s
    # (benchmarks/stage_fixed_cost.py, README "Speed").
    context.use_datasource_v2 = False


class ResourceError(RuntimeError):
    """A stage's config asks for more CPUs or GPUs than the cluster has."""


def check_resources(stage: str, demands: list[tuple[str, float, str]],
                    autoscaling: bool = False) -> None:
    """Stop (or, on an autoscaling cluster, warn) when ``demands`` -- (resource, amount, the
    config keys that ask for it) -- exceed the cluster's total: Ray would otherwise wait for
    resources that never come, silently (a GPU preset on a CPU machine)."""
    import ray

    have = ray.cluster_resources()
    short = [f"{amount:g} {resource} ({keys}) but the cluster has {have.get(resource, 0):g}"
             for resource, amount, keys in demands if amount > have.get(resource, 0) + 1e-9]
    if not short:
        return
    message = f"{stage}: the config asks for more than the cluster has: " + "; ".join(short)
    if autoscaling:
        log.warning("%s; waiting for the autoscaler to add nodes (ray.autoscaling=true)",
                    message)
        return
    raise ResourceError(f"{message}. Lower these keys or add nodes; on an autoscaling "
                        "cluster set ray.autoscaling=true to wait for nodes instead")
