"""The cluster manifests point at what exists here: entrypoints, presets, config keys, and
resources the presets ask for; and they keep the security defaults (token auth, no public
dashboard, no credentials written in them)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from biolord_ray.cli import build_parser
from biolord_ray.config import load_config
from biolord_ray.runtime import WORKER_ENV

REPO = Path(__file__).resolve().parents[2]
IMAGE_WORKDIR = "/home/ray/biolord-ray/"  # where cluster/Dockerfile.gpu puts the project


def _load(relative: str) -> dict:
    return yaml.safe_load((REPO / relative).read_text())


def _raycluster_specs() -> list[dict]:
    return [_load("cluster/kuberay/raycluster.yaml")["spec"],
            _load("cluster/kuberay/rayjob.yaml")["spec"]["rayClusterSpec"]]


def _check_job_command(command: str, data_dir: Path):
    """The command names a job script of this project and a config that loads (with the KG
    path, which lives on the cluster, pointed at a local folder)."""
    args = shlex.split(command)
    assert args[0] == "python"
    script = REPO / args[1].removeprefix(IMAGE_WORKDIR)
    assert script.is_file(), f"{args[1]}: no such job in the project"
    command = re.search(r'main\(\["(\w+)"', script.read_text()).group(1)  # its biolord-ray command
    parsed = build_parser().parse_args([command, *args[2:]])
    overrides = [re.sub(r"^kg\.path=.*", f"kg.path={data_dir}", o) for o in parsed.overrides]
    if parsed.run_dir:
        overrides.append(f"run_dir={parsed.run_dir}")
    return load_config(parsed.config, overrides)


def test_rayjob_runs_the_full_pipeline_on_the_paper_preset(tmp_path):
    job = _load("cluster/kuberay/rayjob.yaml")["spec"]
    cfg = _check_job_command(job["entrypoint"], tmp_path)
    assert cfg.kg.format == "umls" and cfg.contrastive.use_gpu
    assert job["shutdownAfterJobFinishes"] is True
    assert "jobs/full_pipeline.py" in job["entrypoint"]


def test_launcher_and_runtime_env_usage_lines_name_real_commands(tmp_path):
    for relative in ("cluster/launcher/gpu-cluster.yaml", "cluster/runtime_env.yaml",
                     "cluster/kuberay/raycluster.yaml"):
        text = (REPO / relative).read_text()
        commands = re.findall(r"-- (python jobs/\S+\.py[^\n]*(?:\n#\s+--set[^\n]*)*)", text)
        assert commands, f"{relative}: no job command in its usage lines"
        for command in commands:
            _check_job_command(re.sub(r"\\?\n#\s+", " ", command), tmp_path)
    env = _load("cluster/runtime_env.yaml")
    assert env["working_dir"] == "." and {".venv/", "runs/"} <= set(env["excludes"])
    # A cluster's workers allocate Arrow memory as a local instance's do.
    assert WORKER_ENV.items() <= env["env_vars"].items()


@pytest.mark.parametrize("spec", _raycluster_specs(), ids=["raycluster", "rayjob"])
def test_kuberay_gpu_workers_fit_the_paper_preset(spec):
    cfg = load_config("paper", ["kg.path=/"])
    group = spec["workerGroupSpecs"][0]
    container = group["template"]["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    gpus_per_pod, cpus_per_pod = int(limits["nvidia.com/gpu"]), int(limits["cpu"])
    for train in (cfg.contrastive, cfg.distill):
        assert gpus_per_pod * group["maxReplicas"] >= train.num_workers
        assert cpus_per_pod >= gpus_per_pod * train.cpus_per_worker
    assert cfg.definitions.concurrency * cfg.definitions.gpus_per_engine \
        <= gpus_per_pod * group["maxReplicas"]
    assert container["image"] == spec["headGroupSpec"]["template"]["spec"]["containers"][0][
        "image"]


@pytest.mark.parametrize("spec", _raycluster_specs(), ids=["raycluster", "rayjob"])
def test_kuberay_security_defaults(spec):
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                # Credentials come from Secrets, never as literal values.
                if re.search(r"TOKEN|SECRET|KEY|PASSWORD", variable["name"]):
                    assert "value" not in variable and "secretKeyRef" in variable["valueFrom"]


def test_launcher_gpu_cluster():
    launcher = _load("cluster/launcher/gpu-cluster.yaml")
    cfg = load_config("paper", ["kg.path=/"])
    worker = launcher["available_node_types"]["gpu_worker"]
    assert worker["resources"]["GPU"] * worker["max_workers"] >= cfg.contrastive.num_workers
    assert launcher["available_node_types"][launcher["head_node_type"]]["resources"]["CPU"] == 0
    head_start = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "RAY_AUTH_MODE=token" in head_start
    assert all("RAY_AUTH_MODE=token" in c for c in launcher["worker_start_ray_commands"]
               if c.strip().startswith("export") or "ray start" in c)
    assert "~/.ray/auth_token" in launcher["file_mounts"]
    dockerfile = (REPO / "cluster" / "Dockerfile.gpu").read_text()
    assert f"WORKDIR {IMAGE_WORKDIR.rstrip('/')}" in dockerfile and ".[gpu," in dockerfile
