"""The main job end to end on a real two-node Ray cluster, submitted with ``ray job submit``.

The layout of ``cluster/kuberay/raycluster.yaml``: a head node that runs the job's driver
but no work (no CPUs; dashboard and job server on 127.0.0.1, token authentication on) and a
worker node with two CPUs, both on this machine, so that the driver and the pipeline's tasks,
actors and Ray Train workers are on different nodes. Two faults are injected on the way:

* the job's driver is killed during definition generation; the resubmitted job resumes
  (every concept defined exactly once, only the missing ones generated again);
* a Ray Train worker of the distillation trial is killed with ``distill.max_failures=0``,
  so the trial fails and Ray Tune starts it again (``tune.max_failures=1``).

The run must then finish with every stage complete and the final report written. The job
server must answer on loopback only, and only with the cluster's token. (The optional
multilingual stages run the same Ray Data and Ray Train code on the same loop; they and their
report section are tested in test_multilingual.py, where the student trains long enough to
learn.)
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from conftest import assert_dashboard_locked, readable_rows

from biolord_ray.runtime import small_node_env
from biolord_ray.stage_outputs import DEFINITION_SCHEMA
from biolord_ray.stages import STAGES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The embedded default, made small enough for CI: 120 MONDO concepts (24 of them defined by
# the LLM), short training runs and a grid of one distillation trial (started twice: the
# fault below). Each trial start costs ~35 s here; a grid of several trials and their soup
# are tested in test_distill.py.
OVERRIDES = [
    "kg.max_concepts=120", "kg.shuffle_partitions=2", "targets.shuffle_partitions=2",
    # 24 concepts to define, in small generation batches so that definitions land shard by
    # shard (the driver is killed in between).
    "definitions.max_concepts=24", "definitions.batch_size=8", "definitions.rows_per_shard=8",
    "definitions.max_concurrent_batches=1",
    "eval.max_queries=300", "eval.max_hierarchy_pairs=300",
    "contrastive.max_steps=8", "contrastive.checkpoint_every=8",
    "distill.max_steps=6", "distill.checkpoint_every=3", "distill.max_failures=0",
    "tune.seeds=[0]", "tune.max_failures=1",
]


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all bound at once, as ports asked for one at a time
    can repeat (a node whose agent then finds its metrics port taken fails to start)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


NODE_PORT_FLAGS = ("node-manager-port", "object-manager-port", "metrics-export-port",
                   "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                   "runtime-env-agent-port")


def _ray(args: list[str], env: dict, timeout: float = 120, check: bool = True):
    result = subprocess.run([str(BIN / "ray"), *args], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"ray {' '.join(args)}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def _stop_cluster(temp_dirs: list[str], run_dir: Path) -> None:
    """SIGKILL this cluster's processes (and what they started): those whose command line
    names a node's temp dir (GCS, raylets, dashboard, workers) or the run dir (the job's
    driver). ``ray stop`` would also end the test session's own local Ray."""
    marks = (*temp_dirs, str(run_dir))
    found = [p for p in psutil.process_iter(["cmdline"])
             if any(m in " ".join(p.info["cmdline"] or []) for m in marks)]
    for process in list(found):
        try:
            found += process.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for process in found:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(found, timeout=30)


@contextmanager
def two_node_cluster(run_dir: Path):
    """A head node with no CPUs and a worker node with two; yields (dashboard address, env).

    The worker node holds a distillation trial (0.1 CPU), its two Train workers (0.45 each)
    and, beside them, the whole CPU that a Ray Data file-listing task asks for.
    Each node has its own temp dir, as on separate machines: sharing one, a node's runtime
    env agent deletes a working dir that the other node's job still runs in.
    """
    temp_dirs = [tempfile.mkdtemp(prefix="rayE2E", dir="/tmp") for _ in range(2)]  # short
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_ADDRESS": "", **small_node_env()}
    # Ports of their own for each node: two nodes on one machine (and the test session's
    # local Ray) must not share agent or metrics ports.
    gcs, dashboard, client, *ports = _free_ports(3 + 2 * len(NODE_PORT_FLAGS))
    head_ports, worker_ports = (
        [f"--{flag}={port}" for flag, port in zip(NODE_PORT_FLAGS, node, strict=True)]
        for node in (ports[:len(NODE_PORT_FLAGS)], ports[len(NODE_PORT_FLAGS):]))
    try:
        _ray(["start", "--head", f"--port={gcs}", "--num-cpus=0", "--include-dashboard=true",
              "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
              f"--ray-client-server-port={client}", f"--temp-dir={temp_dirs[0]}",
              "--node-ip-address=127.0.0.1", "--disable-usage-stats", *head_ports], env)
        _ray(["start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
              "--resources={\"second_node\": 1}", "--node-ip-address=127.0.0.1",
              f"--temp-dir={temp_dirs[1]}", *worker_ports], env)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        _stop_cluster(temp_dirs, run_dir)


def _submit(address: str, env: dict, run_dir: Path, submission_id: str, jobs) -> str:
    """Submits the job and returns its id once it runs. Ray sometimes fails to hand a fresh
    cluster's node the working dir it was just sent ("Failed to download runtime_env file
    package ... from the GCS", ray-project/ray#36703: once in about a dozen CI runs here),
    before the job starts: that submission alone is made again, under a new id."""
    for attempt in range(2):
        job_id = submission_id if attempt == 0 else f"{submission_id}-again"
        _ray(["job", "submit", f"--address={address}", f"--submission-id={job_id}",
              "--runtime-env=cluster/runtime_env.yaml", "--no-wait", "--",
              "python", "jobs/full_pipeline.py", "--run-dir", str(run_dir),
              *[arg for o in OVERRIDES for arg in ("--set", o)]], env)
        info, deadline = jobs.get_job_info(job_id), time.time() + 600
        while info.status.value == "PENDING" and time.time() < deadline:
            time.sleep(0.5)
            info = jobs.get_job_info(job_id)
        if "runtime_env setup failed" not in (info.message or ""):
            return job_id
    raise AssertionError(f"job {submission_id}: {info.message}")


def _jobs(address: str):
    """The Jobs SDK client, with the token ``ray start`` wrote for the CLI. The test polls job
    status often: a ``ray job status`` process each time would cost a second of CPU."""
    from ray.job_submission import JobSubmissionClient

    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    return JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})


def _wait_for(condition, what: str, jobs, submission_id: str, timeout: float = 900) -> None:
    """Poll ``condition()`` until true; fail early (with the job's logs) if the job ends."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if jobs.get_job_status(submission_id).is_terminal():
            break
        time.sleep(0.5)
    raise AssertionError(f"never saw {what}; job {submission_id} logs:\n"
                         + jobs.get_job_logs(submission_id)[-6000:])


def _wait_until_done(jobs, submission_id: str, timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = jobs.get_job_status(submission_id)
        if status.is_terminal():
            return status.value
        time.sleep(3)
    return "TIMEOUT"


def _processes(mark: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if mark in " ".join([p.info["name"] or "", *(p.info["cmdline"] or [])])]


def test_pipeline_submitted_to_a_two_node_cluster_survives_faults(tmp_path):
    run_dir = tmp_path / "run"
    shards = run_dir / "_work" / "generate_definitions" / "shards"
    with two_node_cluster(run_dir) as (address, env):
        nodes = json.loads(_ray(["list", "nodes", f"--address={address}", "--format=json"],
                                env).stdout)
        assert len([n for n in nodes if n["state"] == "ALIVE"]) == 2
        assert_dashboard_locked(address)

        jobs = _jobs(address)

        # Fault 1: the driver dies while definitions are being generated.
        first = _submit(address, env, run_dir, "e2e-first", jobs)
        _wait_for(lambda: readable_rows(shards) >= 8, "definition shards", jobs, first)
        drivers = _processes(f"{run_dir} ")  # the driver's command line names the run dir
        assert drivers, "the job's driver process was not found"
        for driver in drivers:
            driver.send_signal(signal.SIGKILL)
        assert _wait_until_done(jobs, first, 120) == "FAILED"
        defined_before = readable_rows(shards)

        # Resubmitted: it resumes. Fault 2: a distillation trial's Train worker dies.
        second = _submit(address, env, run_dir, "e2e-second", jobs)
        train_runs = run_dir / "_work" / "distill"
        _wait_for(lambda: any(train_runs.glob("train-tune-*/*/checkpoint_*")),
                  "a distillation checkpoint", jobs, second)
        workers = _processes("RayTrainWo")
        assert workers, "no Ray Train worker to kill"
        workers[-1].send_signal(signal.SIGKILL)
        status = _wait_until_done(jobs, second, 1500)
        assert status == "SUCCEEDED", jobs.get_job_logs(second)[-6000:]

        # The driver ran on the head, the work (Ray Data actor pools: vLLM, encoders; Ray
        # Train workers) on the other node.
        head = next(n["node_id"] for n in nodes if n["is_head_node"])
        actors = json.loads(_ray(["list", "actors", f"--address={address}", "--format=json",
                                  "--limit=10000"], env).stdout)
        nodes_of = {cls: {a["node_id"] for a in actors if a["class_name"] == cls}
                    for cls in ("JobSupervisor", "_MapWorker", "RayTrainWorker")}
        assert nodes_of["JobSupervisor"] == {head}, nodes_of
        assert len(nodes_of["_MapWorker"] | nodes_of["RayTrainWorker"]) == 1, nodes_of
        assert head not in nodes_of["_MapWorker"] | nodes_of["RayTrainWorker"], nodes_of

    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = ["ingest_kg", "eval_sets", "generate_definitions", "build_pairs",
              "train_contrastive", "teacher_targets", "distill", "soup", "report"]
    assert {s: manifest["stages"][s]["status"] for s in stages} == dict.fromkeys(stages,
                                                                                 "complete")
    # Each stage wrote the outputs the registry says it provides.
    for name in stages:
        assert set(manifest["stages"][name]["outputs"]) <= set(STAGES[name].outputs), name

    # Nothing lost or duplicated by the killed driver, and nothing generated twice.
    summary = json.loads((run_dir / "generate_definitions" / "summary.json").read_text())
    table = pq.read_table(run_dir / "generate_definitions" / "definitions")
    assert table.schema == DEFINITION_SCHEMA
    ids = table["concept_id"].to_pylist()
    assert len(ids) == len(set(ids)) == summary["concepts"] > defined_before
    assert summary["generated_this_run"] == summary["concepts"] - defined_before
    # The steady rate leaves the engine's start-up out of the time.
    assert summary["steady_output_tokens_per_second"] > summary["output_tokens_per_second"] > 0
    assert summary["valid"] + summary["invalid"] == summary["concepts"]
    assert sum(summary["invalid_by_reason"].values()) == summary["invalid"]
    rows = table.to_pylist()
    assert {r["model"] for r in rows} == {"packaged:SmolLM2-135M-Instruct"}
    assert len({r["template_hash"] for r in rows}) == 1
    assert {r["finish_reason"] for r in rows} <= {"stop", "length"}
    assert all(json.loads(r["sampling_params"]) == {"max_tokens": 96, "temperature": 0.0}
               and r["prompt_tokens"] > 20 and r["output_tokens"] > 0
               and r["valid"] == (r["reason"] == "") for r in rows)
    assert not (run_dir / "_work" / "generate_definitions").exists()

    # The failed trial was started again and finished.
    trials = (run_dir / "distill" / "trials.csv").read_text().splitlines()
    assert len(trials) == 2, trials
    errors = list((run_dir / "_work" / "distill").glob("tune-*/*/error.txt"))
    assert errors, "no trial failed: the worker kill did not reach Ray Tune"

    report = (run_dir / "report" / "README.md").read_text()
    for row in ("| base (all-MiniLM-L6-v2) |", "| BioLORD-C (contrastive) |",
                "| BioLORD-S (best distillation trial) |", "| BioLORD (soup, greedy, exported) |",
                "| BioLORD (soup, uniform) |"):
        assert row in report, row
    assert (run_dir / "report" / "timings.png").stat().st_size > 0
    for model in ("train_contrastive/model", "soup/model", "soup/model_s"):
        assert (run_dir / model / "model.safetensors").exists(), model
