"""Definition generation: answer validation, and real vLLM (CPU) runs killed and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from conftest import readable_rows

from biolord_ray.definitions import validate
from biolord_ray.definitions.generate import DEFINITION_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
PROMPT = ('Write a definition of the biomedical concept "Nocturnal enuresis" in one or two '
          "sentences. Facts from a knowledge graph:\n- also called: bedwetting; sleep "
          "enuresis\n- is a kind of: enuresis\nAnswer with the definition only.")
TERMS = ["Nocturnal enuresis", "bedwetting", "sleep enuresis", "enuresis"]
GOOD = ("Nocturnal enuresis is involuntary urination during sleep in a child old enough to "
        "be expected to stay dry at night.")


@pytest.mark.parametrize("answer, finish, reason", [
    (GOOD, "stop", ""),
    ("Bedwetting: involuntary passing of urine while asleep, common in young children.",
     "stop", ""),  # a synonym counts as mentioning the concept
    ("   \n", "stop", "empty"),
    (GOOD[:60], "length", "truncated"),
    ("I'm sorry, but I cannot provide medical definitions for this concept.", "stop",
     "refusal"),
    ("As an AI language model I do not define diseases.", "stop", "refusal"),
    ("Facts from a knowledge graph: also called bedwetting; sleep enuresis, is a kind of "
     "enuresis.", "stop", "repeats_prompt"),
    ("Enuresis at night.", "stop", "too_short"),
    ("A common fruit with yellow skin that grows in tropical climates worldwide.", "stop",
     "off_topic"),
])
def test_validation_rules_on_hand_made_answers(answer, finish, reason):
    assert validate.check(answer, finish, PROMPT, TERMS) == reason


def test_every_reason_is_listed():
    assert set(validate.REASONS) == {"empty", "truncated", "refusal", "repeats_prompt",
                                     "too_short", "off_topic"}


# ---------------------------------------------------------------------------------------
# Real vLLM on CPU (SmolLM2-135M-Instruct) through ray.data.llm

N_CONCEPTS = 40


def _job_args(run_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "jobs" / "generate_definitions.py"), "--run-dir",
            str(run_dir), "--set", f"kg.max_concepts={N_CONCEPTS}", "--set", "ray.num_cpus=2",
            "--set", "definitions.only_missing=false",
            "--set", "definitions.batch_size=4", "--set", "definitions.rows_per_shard=4",
            # One batch at a time, so shards land one by one and the kill finds some written.
            "--set", "definitions.max_concurrent_batches=1"]


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the job and everything it started (local Ray, engine, workers)."""
    tree = [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=60)


@pytest.mark.slow
def test_generation_killed_midway_resumes_without_loss_or_duplicates(tmp_path):
    run_dir = tmp_path / "run"
    shards = run_dir / "_work" / "generate_definitions" / "shards"
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(_job_args(run_dir), stdout=log, stderr=subprocess.STDOUT,
                             cwd=ROOT, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and readable_rows(shards) < 8:
        time.sleep(0.5)
    assert first.poll() is None, "the job ended before it could be killed: " + \
        (tmp_path / "first.log").read_text()[-3000:]
    _kill_tree(first)
    done_before = readable_rows(shards)
    assert 8 <= done_before < N_CONCEPTS

    second = subprocess.run(_job_args(run_dir), capture_output=True, text=True, cwd=ROOT,
                            timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["generate_definitions"]["status"] == "complete"

    table = pq.read_table(run_dir / "generate_definitions" / "definitions")
    assert table.schema == DEFINITION_SCHEMA
    ids = table["concept_id"].to_pylist()
    concepts = pq.read_table(run_dir / "ingest_kg" / "concepts")["concept_id"].to_pylist()
    assert sorted(ids) == sorted(concepts) and len(set(ids)) == N_CONCEPTS  # each exactly once
    summary = json.loads((run_dir / "generate_definitions" / "summary.json").read_text())
    # The rerun generated only what the killed run had not written.
    assert summary["generated_this_run"] == N_CONCEPTS - done_before
    assert summary["concepts"] == N_CONCEPTS
    assert summary["valid"] + summary["invalid"] == N_CONCEPTS
    assert sum(summary["invalid_by_reason"].values()) == summary["invalid"]
    assert summary["valid"] >= N_CONCEPTS // 2, summary
    assert summary["output_tokens_per_second"] > 0
    rows = table.to_pylist()
    assert {r["model"] for r in rows} == {"packaged:SmolLM2-135M-Instruct"}
    assert len({r["template_hash"] for r in rows}) == 1
    assert {r["finish_reason"] for r in rows} <= {"stop", "length"}
    assert all(json.loads(r["sampling_params"]) == {"max_tokens": 96, "temperature": 0.0}
               for r in rows)
    for r in rows:
        assert r["prompt_tokens"] > 20 and r["output_tokens"] > 0
        assert r["valid"] == (r["reason"] == "")
    assert not (run_dir / "_work" / "generate_definitions").exists()


def test_answer_metrics_reach_the_node_metrics_endpoint(ray_local, node_metrics):
    """Counters incremented in Ray workers appear on the node's Prometheus endpoint."""
    from biolord_ray.definitions import generate

    @ray_local.remote(num_cpus=0)
    def answer(reason, tokens):
        generate._record_answer(reason, tokens)

    ray_local.get([answer.remote("", 12), answer.remote("off_topic", 5)])
    node_metrics("ray_biolord_definitions_generated_total", lambda lines: all(
        any(f'outcome="{o}"' in line for line in lines) for o in ("valid", "off_topic")))
