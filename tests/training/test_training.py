"""The contrastive phase for real: 2 Ray Train workers with DeepSpeed on the HPO slice, a
worker SIGKILLed mid-run, and the exported model reloaded two ways."""

import copy
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from biolord_ray.evaluation import eval_sets
from biolord_ray.run_dir import RunDir
from biolord_ray.training import contrastive, pairs

pytestmark = pytest.mark.slow


@pytest.fixture()
def train_cfg(hpo_run, tmp_path):
    """A fresh run directory sharing the HPO slice's completed upstream stages."""
    cfg, run_dir, _ = hpo_run
    cfg = copy.deepcopy(cfg)
    cfg.pairs.validation_fraction = 0.2
    eval_sets.run(cfg, run_dir)
    pairs.run(cfg, run_dir)
    # The run directory is shared by the session: drop the Ray Train storage of earlier tests,
    # so the checkpoints seen here (kept count, the killer's trigger) are this test's own.
    shutil.rmtree(run_dir.path("_work", contrastive.STAGE), ignore_errors=True)
    t = cfg.contrastive
    t.batch_size, t.lr, t.max_steps, t.checkpoint_every, t.log_every = 16, 1e-4, 12, 4, 4
    t.validation_suites = ["kg"]
    cfg.eval.suites = ["kg"]
    return cfg, run_dir


def test_two_worker_deepspeed_run_survives_a_killed_worker_learns_and_exports(
        train_cfg, node_metrics):
    """ZeRO-3 in DeepSpeed's bf16 mode on 2 workers; one worker is SIGKILLed after the first
    checkpoint: Ray Train restarts the workers, every rank reloads its own shard and the run
    continues from that checkpoint, learns, and exports a model that loads two ways."""
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    cfg, run_dir = train_cfg
    t = cfg.contrastive
    # 8 steps, checkpoints at 4 and 8: the kill lands after the first. The validation loss
    # on 128 held-out pairs (not all 373): under ZeRO-3 on CPU each forward gathers the
    # weights, and the whole split took 4.7 to 7.6 s of each of the three validations.
    t.zero_stage, t.precision, t.max_steps, t.max_validation_rows = 3, "bf16", 8, 128
    killed = []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint,
                              args=(run_dir, killed), daemon=True)
    killer.start()
    with node_metrics.recording("ray_biolord_train_") as exported:
        record = contrastive.run(cfg, run_dir, force=True)
    killer.join(timeout=5)
    assert killed, "no Ray Train worker was found to kill"
    assert record["status"] == "complete"
    counts = record["counts"]
    assert counts["steps"] == 8
    # The workers' gauges reached the node's metrics endpoint (the dashboard's source).
    assert {line.split("{")[0] for line in exported if 'phase="contrastive"' in line} == {
        f"ray_biolord_train_{name}" for name in ("step", "loss", "pairs_per_second",
                                                 "val_score")}

    history = _history(run_dir)
    # The restarted workers loaded the step-4 checkpoint instead of starting again at 0.
    assert [(r["step"], r.get("resumed_from")) for r in history] == [
        (0, None), (4, 0), (8, 4)]
    # Learning is judged on the fixed validation pairs: each training loss is a mean over
    # different pairs (steps 1-4, 5-8), so comparing them hangs on the data order.
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert all(np.isfinite(r["train_loss"]) for r in history[1:])
    assert counts["best_step"] in (4, 8)
    out = Path(run_dir.path(contrastive.STAGE))
    assert (out / "history.png").stat().st_size > 0
    assert (out / "evaluation" / "results.json").exists()

    # Ray Train kept the best checkpoints only.
    storage = Path(run_dir.path("_work", contrastive.STAGE))
    kept = [p for p in storage.glob("*/checkpoint_*") if p.is_dir()]  # not the snapshot file
    assert 1 <= len(kept) <= cfg.contrastive.keep_checkpoints + 1

    model_dir = out / "model"
    card = (model_dir / "README.md").read_text()
    assert "all-MiniLM-L6-v2" in card and "mean_pooling" in card and "ZeRO-3, bf16" in card
    texts = ["Abnormality of the eye", "Seizure", "An abnormality of the heart rhythm."]
    st_vectors = SentenceTransformer(str(model_dir), device="cpu").encode(texts)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = AutoModel.from_pretrained(model_dir)
    assert encoder.dtype == torch.float32  # exported in fp32 whatever it trained in
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        tokens = encoder(**batch)[0]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = F.normalize((tokens * mask).sum(1) / mask.sum(1), dim=1).numpy()
    np.testing.assert_allclose(st_vectors, mean, atol=1e-5)
    # Trained: the weights moved away from the base model's.
    base = SentenceTransformer(str(Path(_base_dir())), device="cpu").encode(texts)
    assert not np.allclose(base, st_vectors, atol=1e-3)


def _kill_a_worker_after_first_checkpoint(run_dir: RunDir, killed: list) -> None:
    storage = Path(run_dir.path("_work", contrastive.STAGE))
    deadline = time.time() + 600
    while time.time() < deadline and not _registered_checkpoints(storage):
        time.sleep(0.2)
    # Ray names actor processes "ray::RayTrainWorker..." (process title).
    workers = [p for p in psutil.process_iter(["name", "cmdline"])
               if "RayTrainWo" in " ".join([p.info["name"] or "", *(p.info["cmdline"] or [])])]
    if workers:
        os.kill(workers[-1].pid, signal.SIGKILL)
        killed.append(workers[-1].pid)


def _registered_checkpoints(storage: Path) -> list:
    """Checkpoints Ray Train has registered (a folder alone may still be uploading)."""
    import json

    for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            return json.loads(snapshot.read_text())["checkpoint_results"]
        except (ValueError, KeyError):
            return []  # being rewritten
    return []


def _history(run_dir: RunDir) -> list[dict]:
    import csv

    with open(run_dir.path(contrastive.STAGE, "history.csv")) as f:
        return [{k: float(v) if k not in ("step", "epoch") else int(float(v))
                 for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _base_dir() -> str:
    from biolord_ray.models.encode import sentence_model_dir

    return sentence_model_dir("packaged:all-MiniLM-L6-v2")


def test_validation_rows_are_capped_to_the_same_first_rows(ray_local, tmp_path):
    """The validation loss reads the first max_validation_rows rows of the (shuffled) split,
    in file order: the same rows at every validation and after a resume."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from biolord_ray.config import TrainConfig
    from biolord_ray.training import loop

    for part in range(3):  # three files of 40 rows: the cap crosses a file boundary
        folder = tmp_path / "validation"
        folder.mkdir(exist_ok=True)
        ids = [f"C{part * 40 + i:03d}" for i in range(40)]
        pq.write_table(pa.table({"concept_id": ids, "anchor": ids, "positive": ids}),
                       folder / f"part-{part}.parquet")
    shutil.copytree(tmp_path / "validation", tmp_path / "train")
    fs = pafs.LocalFileSystem()
    columns = ["anchor", "positive"]
    tcfg = TrainConfig(batch_size=8, num_workers=2, max_validation_rows=50)
    reads = [loop.read_datasets(str(tmp_path / "train"), str(tmp_path / "validation"), fs,
                                columns, tcfg)["validation"].to_pandas() for _ in range(2)]
    assert reads[0].columns.tolist() == columns
    assert reads[0]["anchor"].tolist() == [f"C{i:03d}" for i in range(50)]
    assert reads[0].equals(reads[1])
    tcfg.max_validation_rows = None
    assert loop.read_datasets(str(tmp_path / "train"), str(tmp_path / "validation"), fs,
                              columns, tcfg)["validation"].count() == 120
    tcfg.max_validation_rows = 15  # fewer than one batch per worker: no validation loss
    assert "validation" not in loop.read_datasets(
        str(tmp_path / "train"), str(tmp_path / "validation"), fs, columns, tcfg)
