"""Connecting to Ray: a local instance for the embedded default, or an existing cluster."""

from __future__ import annotations

import logging
import os

from biolord_ray.config import RayConfig

log = logging.getLogger(__name__)


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
        context = ray.init(num_cpus=cfg.num_cpus, include_dashboard=True,
                           dashboard_host=cfg.dashboard_host)
    ray.data.DataContext.get_current().enable_progress_bars = True
    log.info("Ray resources: %s; dashboard: %s", ray.cluster_resources(),
             context.dashboard_url)
    return context
