"""Self-distillation for real on the HPO slice: teacher targets on Ray Data actors, a Ray Tune
grid of two 2-worker Ray Train + DeepSpeed trials, and the soup of their models."""

import copy
import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from biolord_ray.config import to_dict
from biolord_ray.evaluation import eval_sets
from biolord_ray.training import distill, loop, pairs, soup, teacher_targets

pytestmark = pytest.mark.slow


@pytest.fixture()
def distill_cfg(hpo_run):
    cfg, run_dir, _ = hpo_run
    cfg = copy.deepcopy(cfg)
    eval_sets.run(cfg, run_dir)
    pairs.run(cfg, run_dir)
    # The base model as its own teacher: real targets without training a contrastive model.
    cfg.targets.teacher = "packaged:all-MiniLM-L6-v2"
    t = cfg.distill
    t.batch_size, t.max_steps, t.checkpoint_every, t.log_every = 16, 4, 4, 2
    t.validation_suites = ["kg"]
    cfg.tune.seeds, cfg.tune.lrs, cfg.soup.top_k = [0, 1], [1e-4], 2
    cfg.eval.suites = ["kg"]
    shutil.rmtree(run_dir.path("_work", distill.STAGE), ignore_errors=True)
    return cfg, run_dir


def test_targets_grid_interrupted_and_resumed_then_soup(distill_cfg, tmp_path):
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    cfg, run_dir = distill_cfg
    record = teacher_targets.run(cfg, run_dir, force=True)
    assert record["counts"]["train_texts"] > 0 and record["counts"]["validation_texts"] > 0
    train = pq.read_table(run_dir.output(teacher_targets.STAGE, "train")).to_pandas()
    vectors = np.stack(train["target"].map(np.asarray))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # One target per concept, shared by all of its texts.
    assert (train.groupby("concept_id")["target"].apply(
        lambda t: len({tuple(np.round(v, 6)) for v in t})) == 1).all()
    assert set(train["kind"]) <= {"name", "definition"}

    # The sweep, interrupted (Ctrl+C) once its first trial has finished ...
    first_trial = _interrupt_sweep_after_first_trial(cfg, tmp_path)
    finished_states = _checkpoint_states(first_trial)
    assert finished_states, "the first trial left no checkpoint"
    snapshot = (first_trial / "checkpoint_manager_snapshot.json").read_text()
    # ... and resumed (Tuner.restore of the same experiment): only the unfinished trial trains.
    record = distill.run(cfg, run_dir)
    assert record["counts"]["trials"] == 2 and record["counts"]["failed_trials"] == 0
    assert len(list((Path(cfg.run_dir) / "_work" / distill.STAGE).glob("tune-*"))) == 1
    # The finished trial was not trained again, nor its Train run started (a started run
    # would have reported to its snapshot): Tune got the finished run's checkpoints.
    assert _checkpoint_states(first_trial) == finished_states
    assert (first_trial / "checkpoint_manager_snapshot.json").read_text() == snapshot
    with open(run_dir.output(distill.STAGE, "trials")) as f:
        trials = list(csv.DictReader(f))
    assert sorted(t["trial"] for t in trials) == ["lr=0.0001_seed=0", "lr=0.0001_seed=1"]
    assert all(int(t["step"]) == 4 for t in trials)  # no trial re-scores the base model
    assert 0 < record["counts"]["base_val_score"] < 1
    scores = [float(t[loop.SCORE]) for t in trials]
    assert scores == sorted(scores, reverse=True)

    record = soup.run(cfg, run_dir, force=True)
    counts = record["counts"]
    assert counts["trials"] == 2 and counts["uniform_ingredients"] == 2
    assert counts["best_trial_val_score"] == pytest.approx(scores[0], abs=2e-3)
    # The exported soup is exactly the average of its ingredients.
    members = [run_dir.path(distill.STAGE, t["model"]) for t in trials]
    if cfg.soup.method == "greedy":
        members = members[:counts["greedy_ingredients"]]
    ingredients = [load_file(f"{m}/model.safetensors") for m in members]
    soup_weights = load_file(run_dir.path(soup.STAGE, "model", "model.safetensors"))
    for key, value in soup_weights.items():
        if value.is_floating_point():
            expected = sum(w[key].double() for w in ingredients) / len(ingredients)
            assert np.array_equal(value.numpy(), expected.float().numpy()), key
    best_trial = load_file(f"{members[0]}/model.safetensors")
    single = load_file(run_dir.path(soup.STAGE, "model_s", "model.safetensors"))
    assert all(np.array_equal(single[k].numpy(), best_trial[k].numpy()) for k in best_trial)

    for subdir in ("model", "model_s"):
        path = run_dir.path(soup.STAGE, subdir)
        assert "BioLORD-2023" in open(f"{path}/README.md").read()
        assert SentenceTransformer(path, device="cpu").encode(["Seizure"]).shape == (1, 384)
    with open(run_dir.output(soup.STAGE, "table")) as f:
        kinds = [row["kind"] for row in csv.DictReader(f)]
    assert kinds.count("trial") == 2 and kinds.count("greedy step") == 2
    assert set(counts) >= {"full_suite_teacher", "full_suite_best_trial",
                           "full_suite_soup_greedy", "full_suite_soup_uniform"}


SWEEP_SCRIPT = """
import sys
from biolord_ray.config import load_config
from biolord_ray.run_dir import RunDir
from biolord_ray.runtime import init_ray
from biolord_ray.training import distill
cfg = load_config(sys.argv[1])
init_ray(cfg.ray)
distill.run(cfg, RunDir(cfg.run_dir))
"""


def _interrupt_sweep_after_first_trial(cfg, tmp_path) -> Path:
    """Run the sweep in a job process; SIGINT it once a trial has reported its last step.
    Returns that trial's Ray Train run directory."""
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(to_dict(cfg)))  # JSON is YAML
    storage = Path(cfg.run_dir) / "_work" / distill.STAGE
    log_path = tmp_path / "sweep.log"
    # The job's output goes to a file: a pipe read only at the end fills up (64 KB of Ray
    # and Tune logs) and blocks the job's driver, which then never writes a trial's result.
    with open(log_path, "w") as log:
        job = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(config)],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        finished = []
        while time.time() < deadline and job.poll() is None and not finished:
            finished = [p for p in storage.glob("tune-*/distill_trial_*/result.json")
                        if p.stat().st_size]
            time.sleep(0.5)
        assert finished, f"no trial finished (job exit code {job.poll()}):\n" \
                         f"{log_path.read_text()[-3000:]}"
        job.send_signal(signal.SIGINT)
        job.wait(timeout=300)
    finally:
        if job.poll() is None:  # a failed test leaves no sweep (and its Ray) running
            job.send_signal(signal.SIGINT)
            try:
                job.wait(timeout=60)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait()
    output = log_path.read_text()
    assert job.returncode != 0 and "interrupted" in output, output[-3000:]
    result = json.loads(finished[0].read_text().splitlines()[-1])
    return Path(result["checkpoint_path"]).parent


def _checkpoint_states(train_run: Path) -> set[str]:
    """The distinct loop states saved in a Ray Train run's checkpoints."""
    return {(p / loop.STATE_FILE).read_text() for p in train_run.glob("checkpoint_*")
            if p.is_dir()}
